# SPDX-License-Identifier: Apache-2.0
# RunResult and load_runs: read and validate the result.json that the pipeline writes per run.
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any

RESULT_FILE = "result.json"
METRICS = ("val_accuracy", "test_accuracy")
INPUT_PREFIX = "input:"


@dataclass(frozen=True)
class RunResult:
    """One finished run, as read from its ``result.json``.

    The mappings are read-only views, so a loaded run cannot drift from its file.

    Attributes:
        path: The run directory (the folder holding ``result.json``).
        name: The run label: ``"name"`` from the file, else the directory name.
        method: How the model was obtained: ``"joint"``, ``"w8a8"``, ``"pruning"``, ...
        val_accuracy: Metric of the final model on the validation split (selection uses it).
        test_accuracy: Metric on the test split (reported only), None when the file has none.
        costs: Cost name (``"size_bytes"``, ``"bitops"``, ``"mpic_cycles"``, ...) to value;
            a cost that is null in the file (not priceable by its hardware model) is left out.
        architecture: Per searchable layer in graph order, ``{"weight_bits": (bits per output
            channel, 0 = pruned), "act_bits": bits or None}``; ``"input:<name>"`` entries hold
            only ``"act_bits"``.
        timings: Phase name (``"search_s"``, ...) to seconds.
        config: The free-form configuration of the run.
    """

    path: Path
    name: str
    method: str
    val_accuracy: float
    test_accuracy: float | None
    costs: Mapping[str, float]
    architecture: Mapping[str, Mapping[str, Any]]
    timings: Mapping[str, float]
    config: Mapping[str, Any]

    def metric(self, metric: str) -> float:
        """Return ``val_accuracy`` or ``test_accuracy``.

        Raises:
            ValueError: If ``metric`` is neither, or the run has no test accuracy.
        """
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
        value = getattr(self, metric)
        if value is None:
            raise ValueError(f"run {self.name!r} ({self.path}) has no {metric}")
        return float(value)

    def cost(self, cost: str) -> float:
        """Return the value of one cost.

        Raises:
            ValueError: If the run does not report that cost.
        """
        if cost not in self.costs:
            raise ValueError(
                f"run {self.name!r} ({self.path}) has no cost {cost!r}; "
                f"it reports {sorted(self.costs)}"
            )
        return self.costs[cost]

    def channel_counts(self) -> tuple[int, int]:
        """Return ``(pruned output channels, all output channels)`` over the searchable layers."""
        bits = [b for entry in self.architecture.values() for b in entry.get("weight_bits", ())]
        return sum(b == 0 for b in bits), len(bits)


def load_run(path: str | PathLike[str]) -> RunResult:
    """Read one run: a run directory, or the path of its ``result.json``.

    Raises:
        ValueError: If the file is missing, is not valid JSON, or lacks or mistypes a required
            key (``method``, ``val_accuracy``, ``costs``, ``architecture``). The message names
            the file.
    """
    given = Path(path)
    file = given / RESULT_FILE if given.is_dir() else given
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{file}: cannot read the run's result ({error.strerror})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    try:
        return _parse(data, file.parent)
    except ValueError as error:
        raise ValueError(f"{file}: {error}") from None


def load_runs(paths: Iterable[str | PathLike[str]]) -> list[RunResult]:
    """Read several runs, in the given order (see `load_run`).

    Raises:
        ValueError: As `load_run`, for the first bad file.
    """
    return [load_run(path) for path in paths]


def _parse(data: object, directory: Path) -> RunResult:
    if not isinstance(data, dict):
        raise ValueError(f"the top level must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("method", "val_accuracy", "costs", "architecture") if k not in data]
    if missing:
        raise ValueError(f"missing required key(s) {missing}")
    name = data.get("name")
    if name is None:
        name = directory.resolve().name
    for key, value in (("name", name), ("method", data["method"])):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key!r} must be a non-empty string, got {value!r}")
    test = data.get("test_accuracy")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"'config' must be an object, got {type(config).__name__}")
    return RunResult(
        path=directory,
        name=name,
        method=data["method"],
        val_accuracy=_number("val_accuracy", data["val_accuracy"]),
        test_accuracy=None if test is None else _number("test_accuracy", test),
        costs=_numbers("costs", data["costs"], minimum=0.0),
        architecture=parse_architecture(data["architecture"]),
        timings=_numbers("timings", data.get("timings", {}), minimum=0.0),
        config=MappingProxyType(config),
    )


def _number(key: str, value: object, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key!r} must be >= {minimum}, got {value!r}")
    return float(value)


def _numbers(key: str, value: object, minimum: float) -> Mapping[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be an object of numbers, got {type(value).__name__}")
    # The pipeline writes null for a cost whose hardware model cannot price the architecture
    # (e.g. bit-widths MPIC lacks): the run simply does not report that cost.
    return MappingProxyType(
        {k: _number(f"{key}.{k}", v, minimum) for k, v in value.items() if v is not None}
    )


def _bits(key: str, value: object, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key!r} must be an int >= 0, got {value!r}")
    return value


def parse_architecture(value: object) -> Mapping[str, Mapping[str, Any]]:
    """Validate an architecture (``SearchModel.architecture()`` format) into read-only form.

    Returns:
        ``{layer: {"weight_bits": tuple of ints, "act_bits": int or None}}`` and
        ``{"input:<name>": {"act_bits": ...}}``, in the given order.

    Raises:
        ValueError: If an entry lacks ``act_bits``, a layer lacks a non-empty ``weight_bits``,
            or a bit-width is not an int >= 0.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"'architecture' must be an object, got {type(value).__name__}")
    layers: dict[str, Mapping[str, Any]] = {}
    for name, entry in value.items():
        key = f"architecture.{name}"
        if not isinstance(entry, Mapping) or "act_bits" not in entry:
            raise ValueError(f"{key!r} must be an object with 'act_bits', got {entry!r}")
        act = _bits(f"{key}.act_bits", entry["act_bits"], allow_none=True)
        if name.startswith(INPUT_PREFIX):
            layers[name] = MappingProxyType({"act_bits": act})
            continue
        weights = entry.get("weight_bits")
        if not isinstance(weights, list | tuple) or not weights:
            raise ValueError(f"{key + '.weight_bits'!r} must be a non-empty list of ints")
        bits = tuple(_bits(f"{key}.weight_bits[{i}]", b, False) for i, b in enumerate(weights))
        layers[name] = MappingProxyType({"weight_bits": bits, "act_bits": act})
    return MappingProxyType(layers)
