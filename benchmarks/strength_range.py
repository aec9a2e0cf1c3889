# SPDX-License-Identifier: Apache-2.0
# What a strength means: one shared warm-up, searches at several strengths, size and accuracy.
"""Measure the useful strength range.

Runs ResNet-8 on a Fashion-MNIST subset (digits where it is not installed) at several strengths
with one shared warm-up, and writes each point's normalized size and validation accuracy. Run:

    python benchmarks/strength_range.py --out benchmarks/results/strength_range
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zerobit.train.demo import with_fallback_data
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import RunConfig
from zerobit.train.sweep import sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--strengths", default="0.03,0.1,0.3,1,3,10")
    parser.add_argument("--subset", type=int, default=4000)
    parser.add_argument("--epochs", default="3,4,2", help="warm-up, search, fine-tune epochs")
    parser.add_argument("--act-bits", default="8")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/strength_range"))
    args = parser.parse_args()
    warmup, search, finetune = (int(e) for e in args.epochs.split(","))
    base = with_fallback_data(
        RunConfig(
            subset=args.subset,
            act_bits=tuple(int(b) for b in args.act_bits.split(",")),
            warmup=PhaseConfig(warmup),
            search=PhaseConfig(search),
            finetune=PhaseConfig(finetune),
        )
    )
    strengths = [float(s) for s in args.strengths.split(",")]
    summary = sweep(base, args.out, strengths=strengths, resume=True)
    rows = []
    for strength, result in zip(strengths, summary["results"]):
        size, ref = result["costs"]["size_bits"], result["costs_all_8bit"]["size_bits"]
        rows.append(
            {
                "strength": strength,
                "size_fraction_of_w8": size / ref,
                "val_accuracy": result["val_accuracy"],
                "test_accuracy": result["test_accuracy"],
            }
        )
        print(
            f"strength {strength:6g}: size {100 * size / ref:5.1f}% of all-8-bit, "
            f"val accuracy {result['val_accuracy']:.4f}"
        )
    (args.out / "strength_range.json").write_text(
        json.dumps({"dataset": base.dataset, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
