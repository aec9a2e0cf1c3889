# SPDX-License-Identifier: Apache-2.0
# The `zerobit` command: parses arguments and calls the public API, nothing else.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zerobit import __version__


def _demo(args: argparse.Namespace) -> int:
    from zerobit.train.demo import DemoConfig, run_demo

    config = DemoConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        subset=args.subset,
        warmup_epochs=args.warmup_epochs,
        search_epochs=args.search_epochs,
        finetune_epochs=args.finetune_epochs,
        strength=args.strength,
        seed=args.seed,
    )
    run_demo(config, Path(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``zerobit`` command."""
    parser = argparse.ArgumentParser(
        prog="zerobit",
        description="Joint pruning and channel-wise mixed-precision search for tiny networks.",
    )
    parser.add_argument("--version", action="version", version=f"zerobit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="warm-up, search, freeze and fine-tune ResNet-8 on the default data",
        description="Runs the whole flow on a Fashion-MNIST subset (or scikit-learn's digits "
        "when Fashion-MNIST is not installed) in a few minutes on 2 CPU cores, and writes "
        "result.json.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument(
        "--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)"
    )
    demo.add_argument("--data-dir", default=None, help="folder of the dataset's raw files")
    demo.add_argument(
        "--subset", type=int, default=4000, help="training samples used (default: 4000)"
    )
    demo.add_argument(
        "--warmup-epochs", type=int, default=3, help="float warm-up epochs (default: 3)"
    )
    demo.add_argument("--search-epochs", type=int, default=4, help="search epochs (default: 4)")
    demo.add_argument(
        "--finetune-epochs", type=int, default=2, help="fine-tuning epochs (default: 2)"
    )
    demo.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="weight of the normalized size cost in the loss (default: 1.0)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zerobit`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ValueError, FileNotFoundError) as error:
        print(f"zerobit: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
