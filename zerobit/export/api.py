# SPDX-License-Identifier: Apache-2.0
# export() and load_artifact(): one entry point per direction for every format.
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from zerobit.export.ir import to_ir
from zerobit.export.packed import read_packed, write_packed
from zerobit.export.prune import prune, to_torch
from zerobit.export.reference import IntegerReference
from zerobit.search import FrozenModel

#: Formats and the file each writes inside the output folder.
FORMATS = {"torch": "model.pt", "packed": "model.zbp", "onnx": "model.onnx", "c": "model.c"}


def _as_tuple(x: torch.Tensor | Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    if x is None:
        return ()
    return (x,) if isinstance(x, torch.Tensor) else tuple(x)


def export(
    frozen: FrozenModel,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None,
    format: str,
    out: str | Path,
) -> Path:
    """Write ``frozen`` as a deployable artifact and check that it computes what ``frozen`` does.

    Args:
        frozen: A frozen model (``SearchModel.freeze()``, fine-tuned or not).
        example_input: Inputs used to check the artifact against the frozen model's eval-mode
            (integer-exact) outputs; None skips the check.
        format: ``"torch"`` (the physically pruned model, ``model.pt``), ``"packed"`` (the
            versioned sub-byte binary, ``model.zbp``), ``"onnx"`` (``model.onnx``, for checking
            and interoperability) or ``"c"`` (C99 sources, ``model.c`` and its runtime).
        out: Output folder (created).

    Returns:
        The path of the main file written.

    Raises:
        ValueError: For an unknown format, a model with layers left in float, or an artifact whose
            outputs differ from the frozen model's.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {sorted(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = prune(to_ir(frozen.eval()))
    path = out / FORMATS[format]
    if format == "torch":
        torch.save(to_torch(graph), path)
    elif format == "packed":
        write_packed(graph, path)
    elif format == "onnx":
        importlib.import_module("zerobit.export.onnx").export_onnx(graph, path)
    else:
        importlib.import_module("zerobit.export.c").export_c(graph, out)
    inputs = _as_tuple(example_input)
    if inputs and format != "c":  # the C build is checked by its own tests (needs a compiler)
        _check(frozen, load_artifact(path), inputs, format)
    return path


def _check(
    frozen: FrozenModel, artifact: Callable[..., Any], inputs: tuple[torch.Tensor, ...], format: str
) -> None:
    with torch.no_grad():
        expected = frozen.eval()(*inputs)
        got = artifact(*inputs)
    if not torch.equal(torch.as_tensor(got).float(), expected.float()):
        diff = float((torch.as_tensor(got).float() - expected.float()).abs().max())
        raise ValueError(
            f"the {format} artifact's outputs differ from the frozen model's (max {diff:g})"
        )


def load_artifact(path: str | Path) -> Callable[..., torch.Tensor]:
    """Load an exported artifact as a callable ``inputs -> logits`` (float32 tensors).

    Args:
        path: ``model.pt``, ``model.zbp`` or ``model.onnx`` as written by :func:`export`.

    Raises:
        ValueError: For an unknown file type; the format's own errors for corrupt files.
    """
    path = Path(path)
    suffix = path.suffix
    if suffix == ".pt":
        model = torch.load(path, weights_only=False).eval()
        return lambda *x: model(*x)
    if suffix == ".zbp":
        reference = IntegerReference(read_packed(path))
        return lambda *x: reference(*x)  # type: ignore[return-value]
    if suffix == ".onnx":
        return importlib.import_module("zerobit.export.onnx").load_onnx(path)
    raise ValueError(f"{path}: unknown artifact type {suffix!r}; expected .pt, .zbp or .onnx")
