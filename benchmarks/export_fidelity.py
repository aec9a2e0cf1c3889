# SPDX-License-Identifier: Apache-2.0
# Does the artifact compute what was searched? Accuracy of the frozen model, the integer-only
# reference and the compiled C program on the same data; artifact bytes against the costs.
"""Export fidelity benchmark.

For every finished run of a benchmark folder that ``--select`` matches (by default the Pareto
points of pareto_fashion_mnist, seed 0): rebuild the final frozen model from its checkpoints,
export it as packed and C, and evaluate on the test set (a) the frozen model (integer-exact
simulation), (b) the integer-only reference read back from the packed file, (c) the C program
built with the host gcc. Also records the packed weight payload against the ``size`` cost, the
file length against the ``flash`` cost, and the C arena against the ``ram`` cost. Run:

    python benchmarks/export_fidelity.py --runs benchmarks/results/pareto_fashion_mnist/seed-0 \
        --samples 2000 --select "joint-budget-*,w*" --out benchmarks/results/export_fidelity
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

import zerobit as zb
from zerobit.data import load_dataset
from zerobit.export import load_artifact, read_manifest
from zerobit.export.packed import packed_runs
from zerobit.train.run import Run, RunConfig


def _logits(model: Any, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[start : start + batch]) for start in range(0, len(x), batch)])


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).float().mean())


def _differing(a: torch.Tensor, b: torch.Tensor) -> int:
    """Samples whose logits differ at all."""
    return int(((a - b).abs().reshape(len(a), -1).amax(dim=1) > 0).sum())


def measure(run_dir: Path, samples: int | None) -> dict[str, Any]:
    """Export one run and compare its three executions and its bytes."""
    config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    frozen = Run(config, run_dir).load_frozen()
    data = load_dataset(config.dataset, config.data_dir, seed=config.seed)
    x, y = data.test[:samples] if samples else data.test[:]
    with tempfile.TemporaryDirectory() as tmp:
        packed_path = zb.export(frozen, x[:64], "packed", Path(tmp) / "packed")
        c_dir = Path(tmp) / "c"
        zb.export(frozen, x[:64], "c", c_dir)
        manifest = read_manifest(c_dir)
        reference = load_artifact(packed_path)
        program = load_artifact(c_dir)
        runs = packed_runs(packed_path.read_bytes())
        payload = sum(run.weight_bytes for run in runs)
        size_bits = zb.cost.evaluate(frozen, "size")
        frozen_logits = _logits(frozen, x)
        reference_logits = _logits(reference, x)
        c_logits = _logits(program, x)
        row = {
            "run": run_dir.name,
            "samples": len(y),
            "accuracy_frozen": _accuracy(frozen_logits, y),
            "accuracy_integer_reference": _accuracy(reference_logits, y),
            "accuracy_c": _accuracy(c_logits, y),
            "samples_differing_reference_vs_frozen": _differing(reference_logits, frozen_logits),
            "samples_differing_c_vs_frozen": _differing(c_logits, frozen_logits),
            "size_cost_bits": size_bits,
            "packed_payload_bits": sum(run.weight_bits for run in runs),
            "packed_payload_bytes": payload,
            "flash_cost_bytes": zb.cost.evaluate(frozen, "flash"),
            "packed_file_bytes": packed_path.stat().st_size,
            "ram_cost_bytes": zb.cost.evaluate(frozen, "ram"),
            "c_arena_bytes": manifest["c"]["arena_bytes"],
            "cortex_m4": manifest.get("cortex_m4"),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--runs", type=Path, default=Path("benchmarks/results/pareto_fashion_mnist/seed-0")
    )
    parser.add_argument("--samples", type=int, default=0, help="test samples (0: all)")
    parser.add_argument(
        "--select", default="*", help="comma-separated globs of the run folders to measure"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_fidelity"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the plot of --out's JSON, measure nothing"
    )
    args = parser.parse_args()
    if args.plot_only:
        rows = json.loads((args.out / "export_fidelity.json").read_text())["rows"]
        plot(rows, args.out / "export_fidelity.png")
        return
    torch.set_num_threads(args.threads)
    run_dirs = sorted(
        {
            p.parent
            for pattern in args.select.split(",")
            for p in args.runs.glob(f"{pattern}/result.json")
            if p.parent.name != "warmup"
        }
    )
    rows = []
    for run_dir in run_dirs:
        row = measure(run_dir, args.samples or None)
        rows.append(row)
        print(
            f"{row['run']:22s} frozen {row['accuracy_frozen']:.4f} reference "
            f"{row['accuracy_integer_reference']:.4f} C {row['accuracy_c']:.4f}; differing "
            f"{row['samples_differing_reference_vs_frozen']}/{row['samples_differing_c_vs_frozen']}"
            f"; file {row['packed_file_bytes']} B = flash {row['flash_cost_bytes']}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_fidelity.json").write_text(json.dumps({"rows": rows}, indent=2))
    (args.out / "export_fidelity.md").write_text(markdown(rows))
    plot(rows, args.out / "export_fidelity.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Left: test accuracy of the frozen model, the integer reference and the C build per run.
    Right: the packed file against the flash cost and the C arena against the ram cost."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    names = [r["run"] for r in rows]
    keys = {
        "frozen": "accuracy_frozen",
        "integer reference": "accuracy_integer_reference",
        "C build": "accuracy_c",
    }
    width = 0.8 / len(keys)
    for j, (label, key) in enumerate(keys.items()):
        xs = [i + (j - 1) * width for i in range(len(rows))]
        left.bar(xs, [100 * r[key] for r in rows], width, label=label)
    left.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
    left.set_ylabel(f"test accuracy (%), {rows[0]['samples']} samples")
    low = min(100 * r["accuracy_frozen"] for r in rows)
    left.set_ylim(max(0.0, low - 10), 100)
    left.legend(fontsize=8)
    left.set_title("frozen = integer reference = C")
    for x_key, y_key, label, marker in (
        ("flash_cost_bytes", "packed_file_bytes", "packed file vs flash cost", "o"),
        ("ram_cost_bytes", "c_arena_bytes", "C arena vs ram cost", "s"),
    ):
        xs, ys = [r[x_key] for r in rows], [r[y_key] for r in rows]
        right.scatter(xs, ys, label=label, marker=marker)
    top = max(max(r["flash_cost_bytes"], r["ram_cost_bytes"]) for r in rows) * 1.05
    right.plot([0, top], [0, top], color="grey", linewidth=0.8, label="equal")
    right.set_xlabel("cost model (bytes)")
    right.set_ylabel("artifact (bytes)")
    right.set_title("artifact bytes = cost")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (what docs/benchmarks.md shows)."""
    lines = [
        "| run | test acc. frozen / reference / C | images with any logit differing "
        "(reference, C) | payload B / size cost bits | file B / flash | arena B / ram | "
        "Cortex-M4 text B |",
        "|---|---|---|---|---|---|---:|",
    ]
    for r in rows:
        arm = r["cortex_m4"]["text"] if r["cortex_m4"] else "n/a"
        lines.append(
            f"| {r['run']} | {100 * r['accuracy_frozen']:.2f} / "
            f"{100 * r['accuracy_integer_reference']:.2f} / {100 * r['accuracy_c']:.2f} % | "
            f"{r['samples_differing_reference_vs_frozen']}, {r['samples_differing_c_vs_frozen']} "
            f"of {r['samples']} | {r['packed_payload_bytes']:,} / {r['size_cost_bits']:,} | "
            f"{r['packed_file_bytes']:,} / {r['flash_cost_bytes']:,} | {r['c_arena_bytes']:,} / "
            f"{r['ram_cost_bytes']:,} | {arm} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
