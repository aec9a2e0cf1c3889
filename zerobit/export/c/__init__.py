# SPDX-License-Identifier: Apache-2.0
# C export: codegen over the C99 runtime (runtime/, package data), host builds, Cortex-M sizes.
from zerobit.export.c.build import HOST_FLAGS, CModel, find_compiler, load_c
from zerobit.export.c.codegen import RUNTIME_FILES, CExport, export_c
from zerobit.export.c.size import ARM_FLAGS, ObjectSize, arm_size_report

__all__ = [
    "ARM_FLAGS",
    "HOST_FLAGS",
    "RUNTIME_FILES",
    "CExport",
    "CModel",
    "ObjectSize",
    "arm_size_report",
    "export_c",
    "find_compiler",
    "load_c",
]
