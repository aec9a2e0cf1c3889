# SPDX-License-Identifier: Apache-2.0
# The `zerobit` command: parses arguments and calls the public API, nothing else.
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from zerobit import __version__
from zerobit.config import COMPENSATIONS, SUPPORTED_WEIGHT_RANGES
from zerobit.train.loop import LR_SCHEDULES


def _bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.replace(" ", "").split(",") if b)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 0,2,4,8, got {text!r}"
        ) from None


def _add_run_options(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """Options shared by `search` and `demo`; ``defaults`` is a RunConfig."""
    data = parser.add_argument_group("data and model")
    data.add_argument(
        "--dataset",
        default=defaults.dataset,
        help="fashion-mnist, digits, kws, speech-commands, cifar10, or your own data: tensors "
        "(a .pt file) or image-folder (train/<class>/ and test/<class>/), both at --data-dir "
        f"(default: {defaults.dataset})",
    )
    data.add_argument(
        "--data-dir",
        default=None,
        help="folder of the dataset's raw files (default: its standard location)",
    )
    data.add_argument(
        "--subset",
        type=int,
        default=defaults.subset,
        help=f"training samples used (default: {defaults.subset or 'all'})",
    )
    data.add_argument(
        "--model",
        default=defaults.model,
        help=f"reference model: resnet8, dscnn, mobilenetv1, mlp (default: {defaults.model})",
    )
    space = parser.add_argument_group("search space and cost")
    space.add_argument(
        "--weight-bits",
        type=_bits,
        default=defaults.weight_bits,
        help="candidate weight bit-widths per channel, 0 = pruned (default: "
        + ",".join(map(str, defaults.weight_bits))
        + ")",
    )
    space.add_argument(
        "--act-bits",
        type=_bits,
        default=defaults.act_bits,
        help="candidate activation bit-widths (default: "
        + ",".join(map(str, defaults.act_bits))
        + ")",
    )
    space.add_argument(
        "--input-bits",
        type=_bits,
        default=defaults.input_bits,
        help="candidate bit-widths of the network input (default: 8)",
    )
    space.add_argument(
        "--weight-range",
        choices=SUPPORTED_WEIGHT_RANGES,
        default=defaults.weight_range,
        help="how each channel's weight quantization range is chosen: minmax, its largest "
        "magnitude (the paper's); mse, the clipped range with the least squared error at each "
        "bit-width (much better 2-bit channels, slightly worse 4-bit ones) "
        f"(default: {defaults.weight_range})",
    )
    space.add_argument(
        "--weight-compensation",
        choices=COMPENSATIONS,
        default="initial",
        help="how the weights make up for the probability of pruning a channel during the "
        "search: initial, divided once by the initial probability of keeping a channel (the "
        "paper's); annealed, the same at the start, faded out as the temperature falls so that "
        "kept channels end at the warm-up's scale; tracking, divided by each layer's expected "
        "fraction of kept channels, never less than at the start; off, left as trained "
        "(default: initial)",
    )
    space.add_argument(
        "--cost",
        default=defaults.cost,
        choices=("size", "bitops", "macs", "mpic", "ne16", "ne16_soft", "flash", "ram"),
        help="cost model driving the search; flash: bytes of the packed file, ram: the C "
        "runtime's activation arena; ne16_soft: NE16 cycles with a partial channel block priced "
        "by its fraction while the search's channel counts are fractional (equal to ne16 on "
        f"every final model) (default: {defaults.cost})",
    )
    space.add_argument(
        "--strength",
        type=float,
        default=defaults.strength,
        help="weight of the cost, normalized by the all-8-bit model's, in the loss; "
        f"larger means smaller models (default: {defaults.strength})",
    )
    space.add_argument(
        "--strength-ramp",
        action="store_true",
        help="ramp the strength from 1%% to 100%% over the first half of the search",
    )
    space.add_argument(
        "--target",
        default=None,
        help="budget mode: the strength adapts so the final model meets a budget, e.g. "
        "size=20kB (kB = 1000 B, KiB = 1024 B), flash=32kB, ram=8KiB, mpic=2e6, ne16=1e5; a "
        "greedy step lowers bits if the searched model ends over budget",
    )
    space.add_argument(
        "--budget-signal",
        choices=("argmax", "expected"),
        default=defaults.budget_signal,
        help="with --target, what steers the strength: argmax, the cost of the architecture the "
        "search would return now (the model often ends well under budget); expected, the "
        "cost of the current probabilities (it ends closer to the budget, using more of it) "
        f"(default: {defaults.budget_signal})",
    )
    space.add_argument(
        "--budget-damping",
        type=float,
        default=defaults.budget_damping,
        metavar="STEPS",
        help="with --target, compare the budget with the cost extrapolated this many steps "
        "ahead while it falls, so that the strength stops growing once the model is on its way "
        "to the budget (small budgets are otherwise overshot: the search ends far under them) "
        f"(0: off; default: {defaults.controller_damping():g}, 0 with an ne16 target, where "
        "damping measured worse)",
    )
    space.add_argument(
        "--budget-rate",
        type=float,
        default=defaults.budget_rate,
        metavar="GAIN",
        help="with --target, the controller's gain: log(strength) moves by GAIN times "
        f"log(cost / budget) per step (default: {defaults.budget_rate:g})",
    )
    space.add_argument(
        "--detach-input-channels",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the cost sees each layer's effective input channels detached; auto: the "
        "paper's policy (detached for size, so a pruned channel is priced in its own layer "
        "only; attached for the others); no: a pruned channel is also priced in its consumers "
        "(default: auto)",
    )
    space.add_argument("--gumbel", action="store_true", help="Gumbel-softmax sampling")
    space.add_argument("--hard", action="store_true", help="hard straight-through sampling")
    train = parser.add_argument_group("training")
    train.add_argument(
        "--warmup-epochs",
        type=int,
        default=defaults.warmup.epochs,
        help=f"float warm-up epochs (default: {defaults.warmup.epochs})",
    )
    train.add_argument(
        "--search-epochs",
        type=int,
        default=defaults.search.epochs,
        help=f"search epochs (default: {defaults.search.epochs})",
    )
    train.add_argument(
        "--finetune-epochs",
        type=int,
        default=defaults.finetune.epochs,
        help=f"fine-tuning epochs (default: {defaults.finetune.epochs})",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        default=defaults.search.batch_size,
        help=f"mini-batch size of every phase (default: {defaults.search.batch_size})",
    )
    train.add_argument(
        "--lr",
        type=float,
        default=defaults.search.lr,
        help=f"Adam learning rate of the weights (default: {defaults.search.lr})",
    )
    train.add_argument(
        "--arch-lr",
        type=float,
        default=defaults.search.arch_lr,
        help=f"Adam learning rate of the architecture logits (default: {defaults.search.arch_lr})",
    )
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping of warm-up and fine-tuning after this many epochs without a better "
        "validation metric (default: off)",
    )
    train.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=None,
        help="learning rate of the weights over every phase: constant, or cosine (decays to 0 "
        f"over the phase's epochs) (default: {defaults.finetune.lr_schedule} for fine-tuning, "
        f"{defaults.search.lr_schedule} for warm-up and search)",
    )
    train.add_argument(
        "--distill",
        type=float,
        default=defaults.distill,
        metavar="WEIGHT",
        help="distill the float warm-up model into the searched and fine-tuned one: the "
        "weight, in [0, 1], of the distillation term in their loss (default: "
        f"{defaults.distill}, off)",
    )
    train.add_argument(
        "--distill-temperature",
        type=float,
        default=defaults.distill_temperature,
        help="softmax temperature of the distillation term "
        f"(default: {defaults.distill_temperature})",
    )
    train.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: 0)")
    parser.add_argument(
        "--out",
        default=None,
        help="run directory to write (config.json, metrics.jsonl, checkpoints/, result.json)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last checkpoint",
    )
    parser.add_argument(
        "--warmup-from",
        default=None,
        metavar="DIR",
        help="start from the finished float warm-up of this run directory, sweep or baselines "
        "folder instead of training one (same dataset, subset, model, seed and warm-up options)",
    )


def _config(args: argparse.Namespace) -> Any:
    from zerobit.train.loop import PhaseConfig
    from zerobit.train.run import RunConfig

    defaults = RunConfig()

    def phase(name: str, epochs: int, patience: int | None = None) -> PhaseConfig:
        return PhaseConfig(
            epochs=epochs,
            lr=args.lr,
            arch_lr=args.arch_lr,
            batch_size=args.batch_size,
            patience=patience,
            lr_schedule=args.lr_schedule or getattr(defaults, name).lr_schedule,
        )

    return RunConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        subset=args.subset,
        model=args.model,
        weight_bits=args.weight_bits,
        act_bits=args.act_bits,
        input_bits=args.input_bits,
        cost=args.cost,
        strength=args.strength,
        strength_ramp=args.strength_ramp,
        gumbel=args.gumbel,
        hard=args.hard,
        warmup=phase("warmup", args.warmup_epochs, args.patience),
        search=phase("search", args.search_epochs),
        finetune=phase("finetune", args.finetune_epochs, args.patience),
        seed=args.seed,
        target=args.target,
        budget_signal=args.budget_signal,
        budget_damping=args.budget_damping,
        budget_rate=args.budget_rate,
        weight_range=args.weight_range,
        weight_compensation=args.weight_compensation,
        distill=args.distill,
        distill_temperature=args.distill_temperature,
        detach_input_channels={"auto": None, "yes": True, "no": False}[args.detach_input_channels],
    )


def _search(args: argparse.Namespace) -> int:
    from zerobit.train.demo import run_demo

    if args.out is None:
        raise ValueError("--out is required: the run directory to write")
    run_demo(_config(args), Path(args.out), resume=args.resume, warmup_from=args.warmup_from)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from zerobit.train.demo import run_demo, with_fallback_data

    run_demo(
        with_fallback_data(_config(args)),
        Path(args.out or "runs/demo"),
        resume=args.resume,
        warmup_from=args.warmup_from,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from zerobit.report import write_report

    if args.storage is not None:
        from zerobit.train.study import report

        if args.runs or args.study is None:
            raise ValueError("give either run directories, or --storage URL with --study NAME")
        summary = report(args.storage, args.study, args.out)
        print(Path(summary["report"]).read_text())
        if summary["missing"]:
            print(f"points without a complete trial yet: {', '.join(summary['missing'])}")
        print(f"wrote {Path(summary['report']).parent}")
        return 0
    if not args.runs or args.out is None:
        raise ValueError("give run directories and --out (or --storage URL --study NAME)")
    if args.compare:
        from zerobit.report import compare_folders

        summary = compare_folders(args.runs, Path(args.out), cost=args.cost, metric=args.metric)
    else:
        summary = write_report(args.runs, Path(args.out), cost=args.cost, metric=args.metric)
    print(Path(summary["report"]).read_text())
    print(f"wrote {args.out}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from zerobit.train.sweep import sweep

    if args.out is None:
        raise ValueError("--out is required: the folder for the sweep's runs and report")
    if args.storage is not None:
        from zerobit.train.study import Heartbeat, sweep_study

        heartbeat = Heartbeat(args.heartbeat_interval, args.grace_period, args.max_retry)
        summary = sweep_study(
            _config(args),
            Path(args.out),
            args.storage or None,
            args.study,
            args.points,
            args.strengths,
            heartbeat,
            args.warmup_from,
        )
    else:
        summary = sweep(
            _config(args),
            Path(args.out),
            args.points,
            args.strengths,
            args.resume,
            args.warmup_from,
        )
    print(Path(summary["report"]).read_text())
    return 0


def _worker(args: argparse.Namespace) -> int:
    from zerobit.train.study import work

    trials = work(args.storage, args.study, args.out)
    print(f"study {args.study}: this worker completed trials {trials}; no trial is left")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from zerobit.train.baselines import baseline

    if args.out is None:
        raise ValueError("--out is required: the folder for the baselines' runs and report")
    methods = tuple(m for m in args.methods.split(",") if m)
    summary = baseline(
        _config(args), Path(args.out), methods, args.points, args.resume, args.warmup_from
    )
    print(Path(summary["report"]).read_text())
    return 0


def _export(args: argparse.Namespace) -> int:
    import json

    from zerobit.export import export, format_manifest, read_manifest
    from zerobit.train.run import Run, RunConfig

    run_dir = Path(args.run)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise ValueError(f"{run_dir} is not a run directory (no config.json)")
    run = Run(RunConfig.from_dict(json.loads(config_path.read_text())), run_dir)
    frozen = run.load_frozen()
    example = run.validation_batch(64)
    path = export(frozen, example, args.format, Path(args.out))
    print(f"wrote {path} ({path.stat().st_size} bytes); outputs checked against the run's model")
    print(format_manifest(read_manifest(Path(args.out))))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from zerobit.data import load_dataset
    from zerobit.export import load_artifact
    from zerobit.train.loop import accuracy

    artifact = load_artifact(args.artifact)
    data = load_dataset(args.dataset, args.data_dir)
    split = {"test": data.test, "val": data.val}[args.split]
    correct = total = 0
    for start in range(0, len(split), 512):  # type: ignore[arg-type]
        x, y = split[start : start + 512]
        correct += round(accuracy(artifact(x), y) * len(y))
        total += len(y)
    print(f"{args.artifact}: {args.split} accuracy {correct / total:.4f} on {total} samples")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``zerobit`` command."""
    from zerobit.train.demo import DEMO_CONFIG
    from zerobit.train.run import RunConfig

    parser = argparse.ArgumentParser(
        prog="zerobit",
        description="Joint pruning and channel-wise mixed-precision search for tiny networks.",
    )
    parser.add_argument("--version", action="version", version=f"zerobit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = commands.add_parser(
        "search",
        help="one run: float warm-up, joint search, freeze, fine-tune",
        description="Runs the three phases of the method on a dataset and writes a run "
        "directory with config.json, metrics.jsonl (one line per epoch), checkpoints/ and "
        "result.json (accuracies, every cost of the final model, its architecture, timings).",
    )
    _add_run_options(search, RunConfig())
    search.set_defaults(handler=_search)
    demo = commands.add_parser(
        "demo",
        help="the whole flow on the default data in a few minutes",
        description="Runs warm-up, search, freeze and fine-tune of ResNet-8 on a 4000-sample "
        "Fashion-MNIST subset (scikit-learn's digits when Debian's dataset-fashion-mnist is not "
        "installed), in a few minutes on 2 CPU cores.",
    )
    _add_run_options(demo, DEMO_CONFIG)
    demo.set_defaults(handler=_demo)
    sweep = commands.add_parser(
        "sweep",
        help="several runs sharing one warm-up, then a Pareto table and plot",
        description="Runs one shared float warm-up, then one search per point, then a report. "
        "By default the points are budgets on --cost, a geometric ladder from 90%% of the "
        "all-8-bit model's cost down to 1.5x the smallest model the space allows, each met by "
        "budget mode, so the points span the front whatever the model or epoch budget. "
        "--strengths runs plain searches at given strengths instead.",
    )
    _add_run_options(sweep, RunConfig())
    sweep.add_argument("--points", type=int, default=5, help="number of budgets (default: 5)")
    sweep.add_argument(
        "--strengths",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="comma-separated strengths to run instead of the budget ladder, e.g. 0.3,1,3",
    )
    study = sweep.add_argument_group("study (a sweep shared by workers on several machines)")
    study.add_argument(
        "--storage",
        nargs="?",
        const="",
        default=None,
        help="run the sweep as an Optuna study stored in this database URL (alone: an SQLite "
        "file study.db in --out; postgresql://user:password@host:5432/db for several machines); "
        "`zerobit worker` processes join it",
    )
    study.add_argument(
        "--study", default=None, help="name of the study (default: the name of --out)"
    )
    study.add_argument(
        "--heartbeat-interval",
        type=int,
        default=60,
        help="seconds between two heartbeats of a worker's trial (default: 60)",
    )
    study.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="seconds without a heartbeat after which a trial is failed and retried "
        "(default: twice the interval)",
    )
    study.add_argument(
        "--max-retry",
        type=int,
        default=3,
        help="times a point whose worker died is retried (default: 3)",
    )
    sweep.set_defaults(handler=_sweep)
    worker = commands.add_parser(
        "worker",
        help="join a sweep's study and run its points until none is left",
        description="Takes the waiting trials (sweep points) of a study made by `zerobit sweep "
        "--storage`, one at a time, and runs each in the study's artifacts folder, which this "
        "machine must see (shared filesystem). A worker that dies has its trial failed after "
        "the grace period and retried by another worker, resuming from its last checkpoint.",
    )
    worker.add_argument("--storage", required=True, help="database URL of the study")
    worker.add_argument("--study", required=True, help="name of the study")
    worker.add_argument(
        "--out",
        default=None,
        help="the study's artifacts folder as this machine mounts it (default: the path the "
        "sweep stored)",
    )
    worker.set_defaults(handler=_worker)
    base = commands.add_parser(
        "baseline",
        help="comparison methods through the same pipeline and epochs",
        description="Runs comparison methods with the same data, model, warm-up and epochs as "
        "`search`: wXaY (fixed precision, e.g. w8a8, w4a8, w2a8), pruning (weights 0 or 8 "
        "bits), channelwise (channel-wise mixed precision without pruning), layerwise (one "
        "bit-width per layer, EdMIPS-like), sequential (pruning, then mixed precision on the "
        "kept channels) and joint. Searched methods run a budget ladder of "
        "--points points; fixed ones run once. All share one warm-up; a report follows.",
    )
    _add_run_options(base, RunConfig())
    base.add_argument(
        "--methods",
        default="w8a8,w4a8,w2a8,pruning,layerwise,sequential",
        help="comma-separated methods (default: w8a8,w4a8,w2a8,pruning,layerwise,sequential)",
    )
    base.add_argument(
        "--points", type=int, default=3, help="budgets per searched method (default: 3)"
    )
    base.set_defaults(handler=_baseline)
    export = commands.add_parser(
        "export",
        help="write a finished run's model as a deployable artifact",
        description="Rebuilds a run's final model and writes it as: torch (the physically pruned "
        "PyTorch model), packed (the versioned sub-byte binary whose weight bits equal the size "
        "cost), onnx (for checking and interoperability) or c (C99 runtime and model sources). "
        "The artifact's outputs are checked against the run's model before it is reported (c: "
        "when a host C compiler is installed). manifest.json records the flash and RAM costs and, "
        "for c, the Cortex-M4 text/data/bss of arm-none-eabi-size (when installed).",
    )
    export.add_argument("run", help="run directory (with result.json and checkpoints/)")
    export.add_argument(
        "--format", required=True, choices=("torch", "packed", "onnx", "c"), help="artifact format"
    )
    export.add_argument("--out", required=True, help="folder to write the artifact into")
    export.set_defaults(handler=_export)
    evaluate = commands.add_parser(
        "eval",
        help="accuracy of an exported artifact on a dataset",
        description="Loads model.pt, model.zbp, model.onnx or model.c (built with the host C "
        "compiler into a temporary folder and run on the dataset's inputs) and reports its "
        "accuracy.",
    )
    evaluate.add_argument("artifact", help="model.pt, model.zbp, model.onnx or model.c")
    evaluate.add_argument("--dataset", required=True, help="registered dataset name")
    evaluate.add_argument("--data-dir", default=None, help="folder of the dataset's raw files")
    evaluate.add_argument(
        "--split", default="test", choices=("test", "val"), help="split (default: test)"
    )
    evaluate.set_defaults(handler=_eval)
    report = commands.add_parser(
        "report",
        help="table, non-dominated set and pictures of finished runs",
        description="Reads the result.json of each run directory and writes report.md (a table "
        "marking the non-dominated runs), runs.csv, pareto.png, and an architecture map "
        "(layers x channels coloured by bits, pruned channels grey) per non-dominated run.",
    )
    report.add_argument(
        "runs",
        nargs="*",
        help="run directories (each with a result.json); with --compare, sweep or baselines "
        "folders (or single runs)",
    )
    report.add_argument(
        "--compare",
        action="store_true",
        help="one front per folder, each compared with the first folder's front at equal "
        "accuracy (e.g. two sweeps started from one warm-up with --warmup-from)",
    )
    report.add_argument(
        "--out",
        default=None,
        help="folder to write the report into (with --storage: default <artifacts>/report)",
    )
    report.add_argument(
        "--storage",
        default=None,
        help="report the complete trials of a sweep's study in this database URL instead",
    )
    report.add_argument("--study", default=None, help="name of the study (with --storage)")
    report.add_argument(
        "--cost",
        default="size_bytes",
        help="cost on the x axis: size_bytes, size_bits, bitops, macs, mpic_cycles, ne16_cycles, "
        "flash_bytes, ram_bytes (default: size_bytes)",
    )
    report.add_argument(
        "--metric",
        default="val_accuracy",
        help="metric on the y axis: val_accuracy or test_accuracy (default: val_accuracy)",
    )
    report.set_defaults(handler=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zerobit`` command."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
    except (ValueError, FileNotFoundError) as error:
        print(f"zerobit: error: {error}", file=sys.stderr)
        return 2
    from zerobit.train import distributed  # torch is imported by the handlers, not the parser

    distributed.shutdown()  # under torchrun: every rank is done before any tears down
    return code


if __name__ == "__main__":
    sys.exit(main())
