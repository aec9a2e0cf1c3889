# SPDX-License-Identifier: Apache-2.0
# Cortex-M size of an exported C model: arm-none-eabi-gcc objects read by arm-none-eabi-size.
"""Flash and RAM of an exported C model on a Cortex-M, measured with the GNU Arm toolchain."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ARM_FLAGS", "ObjectSize", "arm_size_report"]

ARM_FLAGS = ("-std=c99", "-mcpu=cortex-m4", "-mthumb", "-Os", "-Wall", "-Wextra")
"""Default flags: Cortex-M4, Thumb-2, optimized for size."""


@dataclass(frozen=True)
class ObjectSize:
    """Sections of one object file, in bytes (Berkeley format of ``size``).

    Attributes:
        file: Source file name (``model.c`` or ``zerobit_rt.c``).
        text: Code and read-only data (the packed weights, the constant arrays): flash.
        data: Initialized writable data: flash and RAM.
        bss: Zero-initialized data: RAM (0 here, the caller owns every buffer).
    """

    file: str
    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        """Bytes in flash: ``text + data``."""
        return self.text + self.data


def arm_size_report(
    out_dir: str | os.PathLike[str],
    compiler: str = "arm-none-eabi-gcc",
    flags: tuple[str, ...] = ARM_FLAGS,
) -> list[ObjectSize]:
    """Cross-compile ``model.c`` and ``zerobit_rt.c`` of an :func:`export_c` folder and size them.

    ``main.c`` (file I/O for a host) is left out. The activation arena and scratch buffer, owned
    by the caller, are ``ZB_MODEL_ARENA_SIZE + ZB_MODEL_SCRATCH_SIZE`` bytes of RAM on top.

    Args:
        out_dir: A folder written by :func:`~zerobit.export.c.export_c`.
        compiler: The cross compiler; its ``-size`` sibling (``arm-none-eabi-size``) reads the
            objects.
        flags: Compiler flags (``-c`` and ``-o`` are added).

    Returns:
        One entry per source file, in the order ``model.c``, ``zerobit_rt.c``.

    Raises:
        FileNotFoundError: If the compiler or its ``size`` tool is not installed.
        RuntimeError: If compiling fails, with the compiler's message.
    """
    size_tool = compiler.removesuffix("gcc") + "size"
    for tool in (compiler, size_tool):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is not installed (Debian: gcc-arm-none-eabi)")
    folder = Path(out_dir)
    sources = ["model.c", "zerobit_rt.c"]
    with tempfile.TemporaryDirectory() as build:
        objects = []
        for source in sources:
            target = Path(build) / source.replace(".c", ".o")
            command = [compiler, *flags, "-c", "-o", str(target), str(folder / source)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"{compiler} failed on {source}:\n{result.stderr}")
            objects.append(str(target))
        listing = subprocess.run(
            [size_tool, *objects], capture_output=True, text=True, check=True
        ).stdout
    rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
    return [
        ObjectSize(source, int(row[0]), int(row[1]), int(row[2]))
        for source, row in zip(sources, rows)
    ]
