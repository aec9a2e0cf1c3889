# SPDX-License-Identifier: Apache-2.0
# C export: code generation over the C99 runtime in runtime/ (package data), Cortex-M sizes.
from zerobit.export.c.codegen import RUNTIME_FILES, CExport, export_c
from zerobit.export.c.size import ARM_FLAGS, ObjectSize, arm_size_report

__all__ = ["ARM_FLAGS", "RUNTIME_FILES", "CExport", "ObjectSize", "arm_size_report", "export_c"]
