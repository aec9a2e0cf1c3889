# SPDX-License-Identifier: Apache-2.0
# The native kernels of two revisions side by side: one process, interleaved search steps.
"""Compare the native quantizer kernels of another git revision with the working tree's.

Builds ``zerobit/quant/csrc/ste.cpp`` as it is at ``--base`` and as it is now (the same flags
and cache as the first-use build), then, in one process and one model, interleaves a float step,
a search step on the base kernels and a search step on the current ones (the library is swapped
between steps; everything else is shared: model, batch, optimizers). Reports per case the median
search/float ratio of each and the median of the paired current/base step-time ratio, which a
machine's drift between steps cancels out of. A kernel change's speed-up is read from that
paired ratio, never from two runs of ``search_overhead.py``. Then one activation mixture's
forward and backward alone, each library in turn (``--mixture-shape``). Run:

    python benchmarks/kernel_ab.py --base ed1624a --steps 100 --costs size bitops mpic ne16 \
        --out benchmarks/results/kernel_ab.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from search_overhead import CASES, _float_step, _search_step, setup

from zerobit.quant import _native
from zerobit.quant.ste import mixed_act_quant

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "zerobit/quant/csrc/ste.cpp"


def load_kernels(source: Path) -> ctypes.CDLL:
    """Build (or take from the cache) the kernels of ``source``; return the declared library."""
    saved = _native._SOURCE
    _native._SOURCE = source
    try:
        return _native._declare(ctypes.CDLL(str(_native._build())))
    finally:
        _native._SOURCE = saved


def measure(case: str, cost: str, kernels: dict[str, ctypes.CDLL], steps: int) -> dict:
    x, y, smodel, float_model, opt_f, opt_s, opt_a = setup(case, cost)

    def search(name: str) -> float:
        _native._library = kernels[name]
        return _search_step(smodel, opt_s, opt_a, x, y)

    for _ in range(3):  # warm caches and allocators
        _float_step(float_model, opt_f, x, y)
        for name in kernels:
            search(name)
    times: dict[str, list[float]] = {name: [] for name in kernels}
    floats = []
    for _ in range(steps):
        floats.append(_float_step(float_model, opt_f, x, y))
        for name in kernels:
            times[name].append(search(name))
    paired = [new / old for old, new in zip(times["base"], times["current"])]
    return {
        "model": case,
        "cost": cost,
        "steps": steps,
        **{f"median_ratio_{name}": statistics.median(t / f for t, f in zip(v, floats))
           for name, v in times.items()},
        "median_current_over_base": statistics.median(paired),
    }  # fmt: skip


def measure_mixture(shape: tuple[int, ...], kernels: dict[str, ctypes.CDLL], calls: int) -> dict:
    """Forward and backward of one activation mixture of three candidates (2, 4, 8 bits, as
    after a ReLU) on a tensor of ``shape``, each library in turn; the fastest and the median."""
    torch.manual_seed(0)
    x = torch.randn(shape).relu_().requires_grad_()
    clips = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    probs = torch.tensor([0.2, 0.3, 0.5], requires_grad=True)
    grad = torch.randn(shape)
    times: dict[str, dict[str, list[float]]] = {n: {"forward": [], "backward": []} for n in kernels}
    for call in range(calls + 3):  # three to warm up
        for name in kernels:
            _native._library = kernels[name]
            start = time.perf_counter()
            y = mixed_act_quant(x, clips, probs, (2, 4, 8), False)
            middle = time.perf_counter()
            torch.autograd.grad(y, (x, clips, probs), grad)
            end = time.perf_counter()
            if call >= 3:
                times[name]["forward"].append(middle - start)
                times[name]["backward"].append(end - middle)
    return {
        "shape": list(shape),
        "calls": calls,
        **{f"{direction}_{stat}_s_{name}": f(v[direction])
           for name, v in times.items() for direction in ("forward", "backward")
           for stat, f in (("min", min), ("median", statistics.median))},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--base", required=True, help="git revision whose kernels are the base")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--costs", nargs="+", default=["size", "ne16"])
    parser.add_argument(
        "--mixture-shape",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(128, 16, 28, 28),
        help="also time one activation mixture's forward and backward on a tensor of this "
        "shape (comma-separated; the largest of ResNet-8's)",
    )
    parser.add_argument("--mixture-calls", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    git = ["git", "-C", str(ROOT)]
    base = subprocess.run(
        [*git, "rev-parse", "--short", args.base], check=True, capture_output=True, text=True
    ).stdout.strip()
    base_text = subprocess.run(
        [*git, "show", f"{base}:{SOURCE}"], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as scratch:
        base_source = Path(scratch) / "ste.cpp"
        base_source.write_bytes(base_text)
        kernels = {"base": load_kernels(base_source), "current": load_kernels(ROOT / SOURCE)}
    _native._tried = True  # the swapped libraries stand in for the first-use load
    results = []
    for case in args.models:
        for cost in args.costs:
            r = measure(case, cost, kernels, args.steps)
            results.append(r)
            print(
                f"{case:8s} {cost:5s} search/float: base {r['median_ratio_base']:.3f}x, "
                f"current {r['median_ratio_current']:.3f}x; current/base step "
                f"{r['median_current_over_base']:.3f}"
            )
    mixture = measure_mixture(args.mixture_shape, kernels, args.mixture_calls)
    for direction in ("forward", "backward"):
        print(
            f"mixture {direction} {mixture['shape']}: "
            + ", ".join(
                f"{name} fastest {1e3 * mixture[f'{direction}_min_s_{name}']:.3f} ms, "
                f"median {1e3 * mixture[f'{direction}_median_s_{name}']:.3f} ms"
                for name in kernels
            )
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"base": base, "threads": args.threads, "results": results, "mixture": mixture}
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
