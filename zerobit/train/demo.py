# SPDX-License-Identifier: Apache-2.0
# The demo: the whole pipeline on the default data, sized for a few minutes on 2 CPU cores.
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from zerobit.data import load_dataset
from zerobit.export import export
from zerobit.report import write_report
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import Run, RunConfig

#: Artifacts the demo exports (each checked against the searched model).
DEMO_FORMATS = ("torch", "packed")
#: The demo's settings: a 4000-sample Fashion-MNIST subset, ResNet-8, 3 + 4 + 2 epochs.
DEMO_CONFIG = RunConfig(
    dataset="fashion-mnist",
    subset=4000,
    model="resnet8",
    weight_bits=(0, 2, 4, 8),
    act_bits=(2, 4, 8),
    cost="size",
    strength=1.0,
    warmup=PhaseConfig(epochs=3),
    search=PhaseConfig(epochs=4),
    finetune=PhaseConfig(epochs=2, lr_schedule="cosine"),
)


def with_fallback_data(config: RunConfig) -> RunConfig:
    """Return ``config``, on scikit-learn's digits (with a notice) if Fashion-MNIST is missing."""
    if config.dataset != "fashion-mnist":
        return config
    try:
        load_dataset("fashion-mnist", config.data_dir, subset=16)
    except FileNotFoundError as error:
        warnings.warn(
            f"{error}\nThe demo uses scikit-learn's digits (8x8 images) instead.", stacklevel=2
        )
        return RunConfig(**{**config.to_dict(), "dataset": "digits", "data_dir": None})
    return config


def run_demo(
    config: RunConfig,
    out: Path,
    resume: bool = False,
    warmup_from: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the pipeline for ``config`` into ``out`` and print a summary.

    ``warmup_from`` starts it from another run's float warm-up (see :meth:`Run.run`).
    """
    run = Run(config, out)
    result = run.run(resume=resume, warmup_from=warmup_from)
    if not run.context.is_main:  # a data-parallel run: rank 0 reports and exports
        return result
    summary = write_report([out], out / "report")
    frozen, example = run.load_frozen(), run.validation_batch(64)
    artifacts = {fmt: export(frozen, example, fmt, out / "export" / fmt) for fmt in DEMO_FORMATS}
    arch = result["architecture"]
    pruned = sum(b == 0 for entry in arch.values() for b in entry.get("weight_bits", []))
    total = sum(len(entry.get("weight_bits", [])) for entry in arch.values())
    costs = result["costs"]
    reference = result.get("costs_all_8bit")
    line = (
        f"final model (integer-exact): val accuracy {result['val_accuracy']:.4f}, "
        f"test accuracy {result['test_accuracy']:.4f}, weights {costs['size_bytes']:.0f} B"
    )
    if reference:
        saved = 1 - costs["size_bits"] / reference["size_bits"]
        line += f" ({100 * saved:.1f}% smaller than all-8-bit)"
    print(line + f", {pruned}/{total} channels pruned")
    if result.get("warmup_from"):
        print(f"float warm-up: reused from {result['warmup_from']} (not trained by this run)")
    packed = artifacts["packed"]
    print(
        f"deployable artifact: {packed} ({packed.stat().st_size} bytes, "
        f"{costs['size_bits'] / 8:.0f} of them weights), checked against the searched model"
    )
    print(
        f"run directory: {out}; architecture map: {summary['architecture_plots'][result['name']]}"
    )
    return result
