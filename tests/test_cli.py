# SPDX-License-Identifier: Apache-2.0
# The command line: search, report and errors, through main() as a user would call them.
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from zerobit.cli import build_parser, main

TINY = [
    "--dataset", "digits", "--subset", "128", "--batch-size", "64",
    "--warmup-epochs", "1", "--search-epochs", "1", "--finetune-epochs", "0",
]  # fmt: skip


def test_search_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["search", *TINY, "--strength", "3", "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["config"]["strength"] == 3.0
    assert result["config"]["search"]["epochs"] == 1
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "run" in out and (tmp_path / "report" / "pareto.png").stat().st_size > 0
    assert (tmp_path / "report" / "arch_run.png").exists()


def test_search_from_another_runs_warm_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["search", *TINY, "--out", str(first)]) == 0
    options = ["--weight-bits", "0,4,8", "--warmup-from", str(first)]
    capsys.readouterr()
    assert main(["search", *TINY, *options, "--out", str(second)]) == 0
    assert f"float warm-up: reused from {first.resolve()}" in capsys.readouterr().out
    result = json.loads((second / "result.json").read_text())
    assert result["warmup_from"] == str(first.resolve())
    assert result["config"]["weight_bits"] == [0, 4, 8]
    phases = {json.loads(x)["phase"] for x in (second / "metrics.jsonl").read_text().splitlines()}
    assert "warmup" not in phases
    capsys.readouterr()
    code = main(["search", *TINY, *options, "--seed", "3", "--out", str(tmp_path / "third")])
    assert code == 2
    assert "trained differently: seed 0 there, 3 here" in capsys.readouterr().err


def test_errors_say_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["search", *TINY, "--weight-bits", "0,3,8", "--cost", "mpic", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "mpic cost defines weights in (0, 2, 4, 8)" in capsys.readouterr().err
    assert main(["search", *TINY, "--dataset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--weight-bits", "a,b"])


def test_every_option_is_explained() -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in sub.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"


def test_fine_tuning_defaults_to_a_cosine_rate_and_one_option_sets_every_phase() -> None:
    from zerobit.cli import _config

    def schedules(*options: str) -> list[str]:
        config = _config(build_parser().parse_args(["search", *options, "--out", "x"]))
        return [getattr(config, p).lr_schedule for p in ("warmup", "search", "finetune")]

    assert schedules() == ["constant", "constant", "cosine"]
    assert schedules("--lr-schedule", "constant") == ["constant"] * 3
    assert schedules("--lr-schedule", "cosine") == ["cosine"] * 3


def test_search_on_the_users_own_tensors(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    data = {
        "train_x": torch.rand(96, 1, 6, 6), "train_y": torch.randint(0, 3, (96,)),
        "test_x": torch.rand(30, 1, 6, 6), "test_y": torch.randint(0, 3, (30,)),
    }  # fmt: skip
    torch.save(data, tmp_path / "mine.pt")
    args = [
        "search",
        "--dataset",
        "tensors",
        "--data-dir",
        str(tmp_path / "mine.pt"),
        "--model",
        "mlp",
        "--batch-size",
        "32",
        "--warmup-epochs",
        "1",
        "--search-epochs",
        "1",
        "--finetune-epochs",
        "0",
        "--detach-input-channels",
        "no",
        "--budget-signal",
        "expected",
        "--budget-damping",
        "7.5",
        "--budget-rate",
        "0.2",
        "--weight-range",
        "mse",
        "--weight-compensation",
        "annealed",
        "--lr-schedule",
        "cosine",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["detach_input_channels"] is False and config["budget_signal"] == "expected"
    assert config["weight_range"] == "mse" and config["weight_compensation"] == "annealed"
    assert config["budget_damping"] == 7.5 and config["budget_rate"] == 0.2
    assert {config[p]["lr_schedule"] for p in ("warmup", "search", "finetune")} == {"cosine"}
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["dataset"]["name"] == "tensors" and result["dataset"]["num_classes"] == 3
    assert result["dataset"]["test_samples"] == 30
    assert main(["search", "--dataset", "tensors", "--out", str(tmp_path / "x")]) == 2


def test_export_and_eval_of_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from zerobit.export import load_artifact, read_packed
    from zerobit.train.run import Run, RunConfig

    run = tmp_path / "run"
    assert (
        main(["search", *TINY, "--act-bits", "8", "--target", "size=6kB", "--out", str(run)]) == 0
    )
    result = json.loads((run / "result.json").read_text())
    for fmt in ("torch", "packed"):
        assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    graph = read_packed(tmp_path / "packed" / "model.zbp")
    # The exported weights are the run's final architecture, greedy budget step included.
    kept = sum(b > 0 for e in result["architecture"].values() for b in e.get("weight_bits", []))
    assert sum(len(layer.bias_codes) for layer in graph.layers()) == kept
    frozen = Run(
        RunConfig.from_dict(json.loads((run / "config.json").read_text())), run
    ).load_frozen()
    x = torch.rand(5, 1, 8, 8)
    for artifact in (tmp_path / "torch" / "model.pt", tmp_path / "packed" / "model.zbp"):
        assert torch.equal(load_artifact(artifact)(x), frozen(x))
    assert main(["eval", str(tmp_path / "packed" / "model.zbp"), "--dataset", "digits"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"test accuracy {result['test_accuracy']:.4f}" in line
    # C: built with the host compiler (skipped without one), sized for a Cortex-M4
    from zerobit.export.c import arm_size_report, find_compiler

    if find_compiler() is None:
        return
    assert main(["export", str(run), "--format", "c", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"flash {result['costs']['flash_bytes']} B" in out
    assert f"activation RAM {result['costs']['ram_bytes']} B" in out
    if shutil.which("arm-none-eabi-gcc") is not None:
        text = sum(o.text for o in arm_size_report(tmp_path / "c"))
        assert "Cortex-M4 (arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4" in out
        assert f"text {text} B" in out
    assert main(["eval", str(tmp_path / "c" / "model.c"), "--dataset", "digits"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"test accuracy {result['test_accuracy']:.4f}" in line
