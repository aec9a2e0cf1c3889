# SPDX-License-Identifier: Apache-2.0
# Search-step cost vs float-step cost of the same model and batch, interleaved in one process.
"""Measure the search overhead.

For each model and cost model: the median over interleaved steps of
(search step time) / (float step time). A float step is forward + backward + Adam step of the
model with BatchNorm; a search step is forward + backward + both optimizer steps + cost of the
converted model. The quartiles of the ratio show the spread: time on a quiet machine (the load
average is printed and stored), and compare the ratios of one run, not across machine states (a
slower float step, e.g. under load, lowers the ratio: the search's extra work is about fixed).
``ZEROBIT_NATIVE=0`` measures the pure-torch quantizers instead of the native kernels;
``--weight-range mse`` the search with the MSE weight ranges. ``--controller`` also
times the budget controller's update after each search step (what a search under ``--target``
adds; the pipeline calls it once per step), undamped and with ``--budget-damping 20``, the
default: the damped one evaluates the expected cost besides the argmax one. Run:

    python benchmarks/search_overhead.py --steps 100 --controller \
        --out benchmarks/results/search_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import zerobit as zb
from zerobit.models import DSCNN, ResNet8
from zerobit.quant import _native
from zerobit.train.budget import StrengthController, Target, discrete_cost

CASES = {
    "resnet8": (lambda: ResNet8((1, 28, 28), 10), (1, 28, 28), 10),
    "dscnn": (lambda: DSCNN((1, 49, 10), 12), (1, 49, 10), 12),
}
COSTS = ("size", "bitops", "mpic", "ne16")


def _float_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    start = time.perf_counter()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return time.perf_counter() - start


def _search_step(smodel, opt, arch_opt, x, y) -> float:
    start = time.perf_counter()
    opt.zero_grad()
    arch_opt.zero_grad()
    loss = nn.functional.cross_entropy(smodel(x), y) + 0.5 * smodel.cost()
    loss.backward()
    opt.step()
    arch_opt.step()
    return time.perf_counter() - start


def _update_time(controller: StrengthController, smodel) -> float:
    start = time.perf_counter()
    controller.update(smodel)
    return time.perf_counter() - start


def setup(name: str, cost: str, batch: int = 128, weight_range: str = "minmax") -> tuple:
    """The case's batch, search model, float model and their optimizers, seeded.

    Returns:
        ``(x, y, smodel, float_model, opt_float, opt_weights, opt_arch)``.
    """
    factory, shape, classes = CASES[name]
    torch.manual_seed(0)
    model = factory()
    x, y = torch.rand(batch, *shape), torch.randint(0, classes, (batch,))
    act = (8,) if cost == "ne16" else (2, 4, 8)
    space = zb.SearchSpace((0, 2, 4, 8), act, weight_range=weight_range)
    smodel = zb.convert(model, x, space, cost=cost).train()
    float_model = factory().train()
    opt_f = torch.optim.Adam(float_model.parameters(), 1e-3)
    opt_s = torch.optim.Adam(smodel.weight_parameter_groups(), 1e-3)
    opt_a = torch.optim.SGD(smodel.arch_parameters(), 1e-2, momentum=0.9)
    return x, y, smodel, float_model, opt_f, opt_s, opt_a


def measure(
    name: str,
    cost: str,
    steps: int,
    batch: int,
    weight_range: str = "minmax",
    controller: bool = False,
) -> dict:
    x, y, smodel, float_model, opt_f, opt_s, opt_a = setup(name, cost, batch, weight_range)
    controllers = {}
    if controller:
        # A budget at half the initial cost, in the cost model's unit, as under --target.
        target = Target(cost, 0.5 * discrete_cost(smodel, cost), "half")
        controllers = {
            "update_s": StrengthController(target, 0.5),
            "update_damped_s": StrengthController(target, 0.5, damping=20.0),
        }
    updates: dict[str, list[float]] = {key: [] for key in controllers}
    for _ in range(3):  # warm caches and allocators
        _float_step(float_model, opt_f, x, y)
        _search_step(smodel, opt_s, opt_a, x, y)
    ratios, floats, searches = [], [], []
    for _ in range(steps):
        f = _float_step(float_model, opt_f, x, y)
        s = _search_step(smodel, opt_s, opt_a, x, y)
        for key, c in controllers.items():
            updates[key].append(_update_time(c, smodel))
        floats.append(f)
        searches.append(s)
        ratios.append(s / f)
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "model": name,
        "cost": cost,
        "weight_range": weight_range,
        "steps": steps,
        "batch": batch,
        "median_ratio": statistics.median(ratios),
        "ratio_p25": quartiles[0],
        "ratio_p75": quartiles[2],
        "median_float_s": statistics.median(floats),
        "median_search_s": statistics.median(searches),
        **{f"median_{key}": statistics.median(v) for key, v in updates.items() if v},
    }


def profile(name: str, cost: str, batch: int, steps: int = 10) -> None:
    """Print where the time of a float step and of a search step goes (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x, y, smodel, float_model, opt_f, opt_s, opt_a = setup(name, cost, batch)
    steps_of = {
        "float": lambda: _float_step(float_model, opt_f, x, y),
        "search": lambda: _search_step(smodel, opt_s, opt_a, x, y),
    }
    for kind, step in steps_of.items():
        for _ in range(3):
            step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / steps / 1e3
        print(f"{name} {cost} {kind} step: {total:.1f} ms of CPU per profiled step")
        print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(CASES))
    parser.add_argument("--costs", nargs="+", default=list(COSTS))
    parser.add_argument("--weight-range", choices=("minmax", "mse"), default="minmax")
    parser.add_argument(
        "--controller",
        action="store_true",
        help="also time the budget controller's update per step, undamped and damped",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print torch.profiler's breakdown of both steps per case instead of timing them",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the plot of --out, measure nothing"
    )
    args = parser.parse_args()
    if args.plot_only:
        if args.out is None:
            parser.error("--plot-only needs --out (the JSON to plot)")
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    if args.profile:
        for name in args.models:
            for cost in args.costs:
                profile(name, cost, args.batch)
        return
    native = _native.available()  # builds the kernels now, outside the timed steps
    load_before = os.getloadavg()[0]
    print(f"native kernels: {native}; load average {load_before:.2f}")
    results = []
    for name in args.models:
        for cost in args.costs:
            r = measure(name, cost, args.steps, args.batch, args.weight_range, args.controller)
            results.append(r)
            line = (
                f"{name:8s} {cost:7s} search/float = {r['median_ratio']:.2f}x "
                f"[{r['ratio_p25']:.2f}, {r['ratio_p75']:.2f}] "
                f"(float {1e3 * r['median_float_s']:.1f} ms, "
                f"search {1e3 * r['median_search_s']:.1f} ms)"
            )
            if args.controller:
                line += (
                    f"; controller update {1e3 * r['median_update_s']:.2f} ms, "
                    f"damped {1e3 * r['median_update_damped_s']:.2f} ms"
                )
            print(line)
    load_after = os.getloadavg()[0]
    print(f"load average {load_after:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "threads": args.threads,
            "native": native,
            "load_average": [load_before, load_after],
            "results": results,
        }
        args.out.write_text(json.dumps(summary, indent=2))
        plot(summary, args.out.with_suffix(".png"))


#: The issue's target for the search step / float step ratio.
TARGET = 1.3


def plot(summary: dict, path: Path) -> None:
    """Bars of the median ratio per model and cost, the interquartile range, the 1.3x target."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = summary["results"]
    models = list(dict.fromkeys(r["model"] for r in results))
    costs = list(dict.fromkeys(r["cost"] for r in results))
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / len(costs)
    for j, cost in enumerate(costs):
        rows = {r["model"]: r for r in results if r["cost"] == cost}
        xs = [i + (j - (len(costs) - 1) / 2) * width for i, m in enumerate(models) if m in rows]
        ys = [rows[m]["median_ratio"] for m in models if m in rows]
        low = [rows[m]["median_ratio"] - rows[m]["ratio_p25"] for m in models if m in rows]
        high = [rows[m]["ratio_p75"] - rows[m]["median_ratio"] for m in models if m in rows]
        axes.bar(xs, ys, width, yerr=[low, high], capsize=3, label=cost)
    axes.axhline(TARGET, color="black", linestyle="--", linewidth=1, label=f"target {TARGET}x")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(models)), models)
    axes.set_ylabel("search step / float step (median, IQR)")
    axes.set_ylim(0.8, max(TARGET, *(r["ratio_p75"] for r in results)) + 0.15)
    axes.set_title(f"Search overhead, batch {results[0]['batch']}, {summary['threads']} threads")
    axes.legend(ncols=3, fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
