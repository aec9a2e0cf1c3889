# SPDX-License-Identifier: Apache-2.0
# Host build of an exported C model, run as a callable on torch tensors (for eval and checks).
"""Build an :func:`~zerobit.export.c.export_c` folder with the host C compiler and run it.

:func:`load_c` compiles ``main.c``, ``model.c`` and ``zerobit_rt.c`` into a temporary folder
(``-std=c99 -O2``, never ``-ffast-math``) and returns a :class:`CModel`: calling it writes the
inputs to a file in the format ``main.c`` reads (N samples of float32 in native byte order, the
model inputs of a sample after each other), runs the program and reads its outputs back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

__all__ = ["HOST_FLAGS", "CModel", "find_compiler", "load_c"]

HOST_FLAGS = ("-std=c99", "-O2")
"""Flags of the host build (no -ffast-math: it would change the input quantization)."""


def find_compiler() -> str | None:
    """Return the host C compiler: ``$CC``, else ``gcc``, else ``cc``; None if there is none."""
    for candidate in (os.environ.get("CC"), "gcc", "cc"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _sizes(source: str, name: str) -> list[int]:
    match = re.search(rf"{name}\[\w+\] = \{{([^}}]*)\}};", source)
    if match is None:
        raise ValueError(f"model.c declares no {name}; is it a zerobit export?")
    return [int(v) for v in match.group(1).split(",")]


class CModel:
    """An exported C model built for the host, callable on float32 tensors.

    Args:
        folder: A folder written by :func:`~zerobit.export.c.export_c`.
        compiler: The C compiler (default: :func:`find_compiler`).

    Raises:
        FileNotFoundError: If the folder lacks a source or no C compiler is installed.
        RuntimeError: If the build fails (with the compiler's message).
    """

    def __init__(self, folder: str | os.PathLike[str], compiler: str | None = None) -> None:
        self.folder = Path(folder)
        sources = [self.folder / name for name in ("main.c", "model.c", "zerobit_rt.c")]
        missing = [str(path) for path in sources if not path.exists()]
        if missing:
            raise FileNotFoundError(f"{self.folder} is not a C export: missing {missing}")
        compiler = compiler or find_compiler()
        if compiler is None:
            raise FileNotFoundError("no C compiler found (set CC, or install gcc)")
        model_source = (self.folder / "model.c").read_text()
        self.input_sizes = _sizes(model_source, "zb_model_input_sizes")
        self.output_sizes = _sizes(model_source, "zb_model_output_sizes")
        self.build = Path(tempfile.mkdtemp(prefix="zerobit-c-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.build, True)
        self.binary = self.build / "model"
        command = [compiler, *HOST_FLAGS, "-o", str(self.binary), *map(str, sources), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed to build {self.folder}:\n{result.stderr}")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the model on a batch.

        Args:
            *inputs: One float tensor ``(N, *shape)`` per model input.

        Returns:
            float32 ``(N, values)`` per model output (flattened per sample, as ``main.c`` writes
            them), a tuple for several outputs.

        Raises:
            ValueError: If the inputs do not match the model's.
            RuntimeError: If the program fails.
        """
        if len(inputs) != len(self.input_sizes):
            raise ValueError(f"the model takes {len(self.input_sizes)} inputs, got {len(inputs)}")
        count = len(inputs[0])
        rows = [x.detach().cpu().to(torch.float32).reshape(count, -1) for x in inputs]
        sizes = [row.shape[1] for row in rows]
        if sizes != self.input_sizes:
            raise ValueError(f"input sizes per sample {sizes} differ from {self.input_sizes}")
        with tempfile.TemporaryDirectory(dir=self.build) as work:
            source, target = Path(work) / "inputs.bin", Path(work) / "outputs.bin"
            torch.cat(rows, dim=1).numpy().astype("=f4").tofile(source)
            result = subprocess.run(
                [str(self.binary), str(source), str(target)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"the C model failed ({result.returncode}): {result.stderr}")
            values = np.fromfile(target, dtype="=f4").reshape(count, sum(self.output_sizes))
        outputs = torch.from_numpy(values.copy()).split(self.output_sizes, dim=1)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def load_c(path: str | os.PathLike[str], compiler: str | None = None) -> CModel:
    """Build an exported C model for the host; ``path`` is its ``model.c`` or its folder.

    Raises:
        FileNotFoundError: If the export is incomplete or no C compiler is installed.
        RuntimeError: If the build fails.
    """
    path = Path(path)
    return CModel(path if path.is_dir() else path.parent, compiler)
