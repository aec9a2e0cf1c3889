# SPDX-License-Identifier: Apache-2.0
# export() and load_artifact(): one entry point per direction for every format.
from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from zerobit.cost import evaluate
from zerobit.export.ir import IntegerGraph, to_ir
from zerobit.export.packed import read_packed, write_packed
from zerobit.export.prune import prune, to_torch
from zerobit.export.reference import IntegerReference
from zerobit.search import FrozenModel

#: Formats and the file each writes inside the output folder.
FORMATS = {"torch": "model.pt", "packed": "model.zbp", "onnx": "model.onnx", "c": "model.c"}
#: What export() records about the artifact, next to it.
MANIFEST = "manifest.json"


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

    Next to the artifact, ``manifest.json`` records its format and file, the model's ``size``,
    ``flash`` and ``ram`` costs, and for ``"c"`` the buffer sizes of the C project and, when
    ``arm-none-eabi-gcc`` is installed, the Cortex-M4 ``text``/``data``/``bss`` of its objects
    (:func:`~zerobit.export.c.arm_size_report`); see :func:`format_manifest`.

    Args:
        frozen: A frozen model (``SearchModel.freeze()``, fine-tuned or not).
        example_input: Inputs used to check the artifact against the frozen model's eval-mode
            (integer-exact) outputs; None skips the check. A C artifact is checked when a host
            C compiler is installed (it is built in a temporary folder).
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
    c_export = None
    if format == "torch":
        torch.save(to_torch(graph), path)
    elif format == "packed":
        write_packed(graph, path)
    elif format == "onnx":
        importlib.import_module("zerobit.export.onnx").export_onnx(graph, path)
    else:
        c_export = importlib.import_module("zerobit.export.c").export_c(graph, out)
    inputs = _as_tuple(example_input)
    c_compiler = importlib.import_module("zerobit.export.c").find_compiler()
    if inputs and (format != "c" or c_compiler is not None):
        _check(frozen, load_artifact(path), inputs, format)
    manifest = _manifest(frozen, graph, format, path, c_export)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _manifest(
    frozen: FrozenModel, graph: IntegerGraph, format: str, path: Path, c_export: Any
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": format,
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "costs": {
            "size_bits": evaluate(frozen, "size"),
            "flash_bytes": evaluate(frozen, "flash"),
            "ram_bytes": evaluate(frozen, "ram"),
        },
    }
    if c_export is None:
        return manifest
    manifest["c"] = {
        "arena_bytes": c_export.arena_bytes,
        "scratch_bytes": c_export.scratch_bytes,
        "weight_bytes": c_export.weight_bytes,
    }
    c = importlib.import_module("zerobit.export.c")
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("arm-none-eabi-size") is None:
        manifest["cortex_m4"] = None
        manifest["cortex_m4_note"] = "arm-none-eabi-gcc is not installed (gcc-arm-none-eabi)"
        return manifest
    objects = c.arm_size_report(path.parent)
    text, data, bss = (sum(getattr(o, field) for o in objects) for field in ("text", "data", "bss"))
    manifest["cortex_m4"] = {
        "compiler": "arm-none-eabi-gcc " + " ".join(c.ARM_FLAGS),
        "objects": [dataclasses.asdict(o) for o in objects],
        "text": text,
        "data": data,
        "bss": bss,
        "flash_bytes": text + data,
        "ram_bytes": data + bss + c_export.arena_bytes + c_export.scratch_bytes,
    }
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read the ``manifest.json`` that :func:`export` wrote into ``folder``."""
    return json.loads((Path(folder) / MANIFEST).read_text())  # type: ignore[no-any-return]


def format_manifest(manifest: dict[str, Any]) -> str:
    """Describe an export's manifest in a few lines (what ``zerobit export`` prints)."""
    costs = manifest["costs"]
    lines = [
        f"packed weights {costs['size_bits'] / 8:.0f} B (size cost), flash "
        f"{costs['flash_bytes']} B (packed file: weights, biases, requantization, headers), "
        f"activation RAM {costs['ram_bytes']} B (C arena)"
    ]
    c = manifest.get("c")
    if c is not None:
        lines.append(
            f"C: arena {c['arena_bytes']} B, weight scratch {c['scratch_bytes']} B, packed "
            f"weight arrays {c['weight_bytes']} B"
        )
    arm = manifest.get("cortex_m4")
    if arm is not None:
        objects = ", ".join(
            f"{o['file']} {o['text']}/{o['data']}/{o['bss']}" for o in arm["objects"]
        )
        lines.append(
            f"Cortex-M4 ({arm['compiler']}): text {arm['text']} B, data {arm['data']} B, bss "
            f"{arm['bss']} B (text/data/bss: {objects}); flash {arm['flash_bytes']} B, RAM "
            f"{arm['ram_bytes']} B with the arena and scratch"
        )
    elif "cortex_m4_note" in manifest:
        lines.append(f"Cortex-M4 sizes not measured: {manifest['cortex_m4_note']}")
    return "\n".join(lines)


def _check(
    frozen: FrozenModel, artifact: Callable[..., Any], inputs: tuple[torch.Tensor, ...], format: str
) -> None:
    with torch.no_grad():
        expected = frozen.eval()(*inputs)
        got = torch.as_tensor(artifact(*inputs)).float()
    if format == "c" and got.numel() == expected.numel():
        got = got.reshape(expected.shape)  # the C program writes each sample's values flat
    if not torch.equal(got, expected.float()):
        diff = float((got - expected.float()).abs().max())
        raise ValueError(
            f"the {format} artifact's outputs differ from the frozen model's (max {diff:g})"
        )


def load_artifact(path: str | Path) -> Callable[..., torch.Tensor]:
    """Load an exported artifact as a callable ``inputs -> logits`` (float32 tensors).

    Args:
        path: ``model.pt``, ``model.zbp``, ``model.onnx`` or ``model.c`` (or the folder of a
            C export) as written by :func:`export`. A C export is built with the host C compiler
            into a temporary folder and run as a program (:func:`zerobit.export.c.load_c`); its
            outputs are ``(N, values)`` per sample.

    Raises:
        ValueError: For an unknown file type; the format's own errors for corrupt files.
        FileNotFoundError: For a C export without a host C compiler.
    """
    path = Path(path)
    suffix = path.suffix
    if suffix == ".c" or (path.is_dir() and (path / "model.c").exists()):
        return importlib.import_module("zerobit.export.c").load_c(path)  # type: ignore[no-any-return]
    if suffix == ".pt":
        model = torch.load(path, weights_only=False).eval()
        return lambda *x: model(*x)
    if suffix == ".zbp":
        reference = IntegerReference(read_packed(path))
        return lambda *x: reference(*x)  # type: ignore[return-value]
    if suffix == ".onnx":
        return importlib.import_module("zerobit.export.onnx").load_onnx(path)
    raise ValueError(f"{path}: unknown artifact type {suffix!r}; expected .pt, .zbp, .onnx or .c")
