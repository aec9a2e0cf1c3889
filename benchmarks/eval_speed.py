# SPDX-License-Identifier: Apache-2.0
# Eval forward of a frozen model: the cached float64-requantizing path vs the int64 reference.
"""Measure the speed of the frozen model's integer-exact eval forward.

For each model: a random architecture (weights (0, 2, 4, 8) per channel, activations (2, 4, 8)),
frozen and put in eval mode, then eval forwards of one batch timed alternately with the reference
path (``FrozenLayer.force_reference``: the uncached int64 simulation) and the default fast path,
in one process. Prints and stores the medians and the median of the per-pair ratios
(reference / fast), after checking that both paths give identical logits. Run:

    python benchmarks/eval_speed.py --repeats 21 --out benchmarks/results/eval_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import zerobit as zb
from zerobit.models import DSCNN, ResNet8

CASES = {
    "resnet8": (lambda: ResNet8((1, 28, 28), 10), (1, 28, 28)),
    "dscnn": (lambda: DSCNN((1, 49, 10), 12), (1, 49, 10)),
}
SPACE = zb.SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8))


def random_frozen(name: str, seed: int) -> tuple[zb.FrozenModel, tuple[int, ...]]:
    factory, shape = CASES[name]
    torch.manual_seed(seed)
    smodel = zb.convert(factory(), torch.rand(16, *shape), SPACE)
    with torch.no_grad():
        for parameter in smodel.arch_parameters():
            parameter.copy_(torch.randn(parameter.shape) * 2)
    return smodel.eval().freeze().eval(), shape


def set_reference(frozen: zb.FrozenModel, on: bool) -> None:
    for layer in frozen.layers().values():
        layer.force_reference = on


def timed(frozen: zb.FrozenModel, x: torch.Tensor, reference: bool) -> float:
    set_reference(frozen, reference)
    start = time.perf_counter()
    frozen(x)
    return time.perf_counter() - start


@torch.no_grad()
def measure(name: str, batch: int, repeats: int, seed: int) -> dict:
    frozen, shape = random_frozen(name, seed)
    x = torch.rand(batch, *shape)
    set_reference(frozen, True)
    expected = frozen(x)
    set_reference(frozen, False)
    if not torch.equal(frozen(x), expected):
        raise AssertionError(f"{name}: the fast path differs from the reference")
    reference, fast = [], []
    for _ in range(repeats):
        reference.append(timed(frozen, x, True))
        fast.append(timed(frozen, x, False))
    ratios = [r / f for r, f in zip(reference, fast)]
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "model": name,
        "batch": batch,
        "reference_s": statistics.median(reference),
        "fast_s": statistics.median(fast),
        "ratio": statistics.median(ratios),
        "ratio_quartiles": [quartiles[0], quartiles[2]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.models.split(","):
        row = measure(name, args.batch, args.repeats, args.seed)
        results.append(row)
        print(
            f"{name:8s} batch {row['batch']}: reference {row['reference_s'] * 1e3:.1f} ms, "
            f"fast {row['fast_s'] * 1e3:.1f} ms, ratio {row['ratio']:.2f}x "
            f"[{row['ratio_quartiles'][0]:.2f}, {row['ratio_quartiles'][1]:.2f}]"
        )
    report = {
        "threads": args.threads,
        "repeats": args.repeats,
        "seed": args.seed,
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
