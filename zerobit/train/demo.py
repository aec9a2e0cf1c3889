# SPDX-License-Identifier: Apache-2.0
# The demo: warm-up, joint search, freeze and fine-tune on the default data, in a few minutes.
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from zerobit.config import SearchSpace
from zerobit.cost import evaluate
from zerobit.data import load_dataset
from zerobit.models import get_model
from zerobit.search import convert
from zerobit.train.loop import PhaseConfig, evaluate_metric, fine_tune, search, warm_up

COSTS = ("size", "bitops", "macs", "mpic", "ne16")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of :func:`run_demo` (defaults: a few minutes on 2 CPU cores).

    Attributes:
        dataset: "fashion-mnist" (falls back to "digits" with a notice when not installed).
        data_dir: Folder of the dataset's raw files (None: default location).
        model: Reference model name.
        subset: Training samples used.
        warmup_epochs: Float warm-up epochs.
        search_epochs: Joint search epochs.
        finetune_epochs: Fine-tuning epochs.
        strength: Regularization strength on the normalized size cost.
        seed: Seed of data split, initialization and shuffling.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "resnet8"
    subset: int = 4000
    warmup_epochs: int = 3
    search_epochs: int = 4
    finetune_epochs: int = 2
    strength: float = 1.0
    seed: int = 0


def _load(config: DemoConfig) -> Any:
    try:
        return load_dataset(config.dataset, config.data_dir, subset=config.subset, seed=config.seed)
    except FileNotFoundError as error:
        if config.dataset != "fashion-mnist":
            raise
        warnings.warn(f"{error}\nThe demo uses scikit-learn's digits instead.", stacklevel=2)
        return load_dataset("digits", None, subset=config.subset, seed=config.seed)


def run_demo(config: DemoConfig, out: Path) -> dict[str, Any]:
    """Run warm-up, search, freeze and fine-tune; write ``result.json`` under ``out``.

    Returns:
        The result: accuracies of each phase, every cost of the final model, its architecture.
    """
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    data = _load(config)
    info = data.info
    print(
        f"data: {info.name}, {len(data.train)} train / {len(data.val)} val / {len(data.test)} test"
    )
    model = get_model(config.model, info.input_shape, info.num_classes)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    model, warm_acc = warm_up(
        model, data.train, data.val, PhaseConfig(config.warmup_epochs), seed=config.seed
    )
    timings["warmup_s"] = time.perf_counter() - start
    print(f"float warm-up: val accuracy {warm_acc:.4f}")

    example = torch.stack([data.train[i][0] for i in range(min(256, len(data.train)))])
    space = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8))
    smodel = convert(model, example, space, cost="size")
    start = time.perf_counter()
    smodel, search_acc = search(
        smodel,
        data.train,
        data.val,
        PhaseConfig(config.search_epochs),
        config.strength,
        seed=config.seed,
    )
    timings["search_s"] = time.perf_counter() - start
    print(f"search: val accuracy of the discrete architecture {search_acc:.4f}")

    frozen = smodel.freeze()
    start = time.perf_counter()
    frozen, tune_acc = fine_tune(
        frozen, data.train, data.val, PhaseConfig(config.finetune_epochs), seed=config.seed
    )
    timings["finetune_s"] = time.perf_counter() - start
    test_acc = evaluate_metric(frozen, data.test)
    arch = frozen.architecture()
    costs = {name: evaluate(frozen, name) for name in COSTS if _priceable(frozen, name)}
    reference = {name: evaluate(_all8(smodel), name) for name in costs}
    result = {
        "config": asdict(config),
        "dataset": {
            "name": info.name,
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            "preprocessing": info.preprocessing,
        },
        "val_accuracy": {"warmup": warm_acc, "search": search_acc, "finetune": tune_acc},
        "test_accuracy": test_acc,
        "costs": costs,
        "costs_all_8bit": reference,
        "size_bytes": costs["size"] / 8,
        "architecture": arch,
        "timings": timings,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    pruned = sum(b == 0 for entry in arch.values() for b in entry.get("weight_bits", []))
    total = sum(len(entry.get("weight_bits", [])) for entry in arch.values())
    print(
        f"final (integer-exact) model: test accuracy {test_acc:.4f}, "
        f"size {costs['size'] / 8:.0f} B vs {reference['size'] / 8:.0f} B at 8 bit "
        f"({100 * (1 - costs['size'] / reference['size']):.1f}% smaller), "
        f"{pruned}/{total} channels pruned"
    )
    print(f"wrote {out / 'result.json'}")
    return result


def _priceable(frozen: Any, name: str) -> bool:
    try:
        evaluate(frozen, name)
    except ValueError:
        return False
    return True


def _all8(smodel: Any) -> Any:
    arch = smodel.architecture()
    for entry in arch.values():
        if "weight_bits" in entry:
            entry["weight_bits"] = [8] * len(entry["weight_bits"])
        if entry.get("act_bits") is not None:
            entry["act_bits"] = 8
    reference = _copy_arch_model(smodel, arch)
    return reference


def _copy_arch_model(smodel: Any, arch: dict[str, Any]) -> Any:
    import copy

    clone = copy.deepcopy(smodel)
    clone.load_architecture_(arch)
    return clone.eval().freeze()
