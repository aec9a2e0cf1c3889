# SPDX-License-Identifier: Apache-2.0
# Data-parallel search under torchrun: two ranks follow one process with the same global batch.
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from zerobit.cli import main
from zerobit.train import distributed
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import RunConfig

#: The digits subset has 256 training samples: the global batch of 64 divides it, so the two
#: ranks' batches of 32 make up exactly the single process's batches.
SEARCH = [
    "search", "--dataset", "digits", "--subset", "256", "--model", "mlp", "--batch-size", "64",
    "--warmup-epochs", "1", "--search-epochs", "3", "--finetune-epochs", "1",
    "--gumbel", "--strength", "2", "--seed", "1",
]  # fmt: skip
#: Largest difference allowed between the architecture logits and clips of one process and of
#: two after the 12 search steps of SEARCH from the same warm-up. The ranks add their gradients
#: in another order than one process does (relative differences of about 1e-7), and Adam, which
#: divides each gradient by its running magnitude, lets such differences grow (measured: 2e-4).
LOGIT_TOLERANCE = 1e-3
#: The same after the 8 search steps of API_CONFIG, whose warm-ups (one process, two ranks)
#: differ by float rounding (about 2e-7): perturbing one process's warm-up by as little moves
#: its logits by 1.2e-3 after 8 steps (measured), and two ranks by 5e-3.
LOGIT_TOLERANCE_AFTER_WARMUP = 1e-2
#: Largest difference allowed between float warm-up tensors (weights, BatchNorm statistics);
#: measured: 2e-7. With per-rank BatchNorm statistics they differ by 1e-2 (measured).
WARMUP_TOLERANCE = 1e-5

# Run under torchrun by the API test: a pipeline run whose every checkpoint each rank records.
# The network has no bias before its BatchNorms: such a bias has no gradient (BatchNorm removes
# it), so Adam would turn the float noise of its zero gradient into +-lr steps that differ
# between any two runs, distributed or not, and hide what is compared.
SCRIPT = """
import json, sys
from pathlib import Path
import torch
from torch import nn
from zerobit.train import distributed
from zerobit.train.run import Run, RunConfig


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(64, 96, bias=False), nn.BatchNorm1d(96)
        self.fc2, self.bn2 = nn.Linear(96, 48, bias=False), nn.BatchNorm1d(48)
        self.classifier = nn.Linear(48, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.fc1(torch.flatten(x, 1))))
        return self.classifier(torch.relu(self.bn2(self.fc2(x))))


class Recording(Run):
    def _save(self, obj, phase):
        super()._save(obj, phase)
        if "budget" not in obj:  # the epoch checkpoints, not the one after the greedy step
            state = {
                k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in obj["model"].items()
            }
            self.saved.append((phase, obj["epoch"], state))


out, dump, config = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
run = Recording(RunConfig.from_dict(config), out, model_fn=Net)
run.saved = []
result = run.run()
name = f"rank{run.context.rank}-of-{run.context.world_size}.pt"
torch.save({"saved": run.saved, "result": result}, dump / name)
distributed.shutdown()
"""

API_CONFIG = RunConfig(
    dataset="digits",
    subset=256,
    model="mlp",
    gumbel=True,
    target="size=4kB",
    seed=2,
    warmup=PhaseConfig(2, batch_size=64),
    search=PhaseConfig(2, batch_size=64),
    finetune=PhaseConfig(1, batch_size=64),
)


def _env(backend: str = "gloo") -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ZEROBIT_BACKEND": backend}


def _torchrun(args: list[str], nproc: int = 2, backend: str = "gloo") -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", *args]
    done = subprocess.run(command, env=_env(backend), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _channel_decisions(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [v.argmax(dim=0).flatten() for k, v in sorted(state.items()) if "zb_selectors" in k]
    )


def _same(a: object, b: object) -> bool:
    """Equal state entries: tensors bit for bit, extra state (activation bits) by value."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], part: str) -> float:
    return max(
        float((a[k].double() - b[k].double()).abs().max())
        for k in a
        if part in k and a[k].is_floating_point()
    )


def test_torchrun_search_command_matches_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main([*SEARCH, "--out", str(single)]) == 0
    # Both searches start from the same warm-up (as the runs of a sweep do); the warm-up itself
    # is compared in the test below.
    (ddp / "checkpoints").mkdir(parents=True)
    shutil.copyfile(single / "checkpoints" / "warmup.pt", ddp / "checkpoints" / "warmup.pt")
    _torchrun(["-m", "zerobit", *SEARCH, "--out", str(ddp), "--resume"])

    # Rank 0 alone wrote the run directory: one line per epoch, as the single process wrote.
    one, two = _lines(single)[1:], _lines(ddp)  # the shared warm-up is logged by `single`
    assert [(r["phase"], r["epoch"]) for r in two] == [(r["phase"], r["epoch"]) for r in one]
    assert (ddp / "export" / "packed" / "model.zbp").exists()
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        if a["phase"] == "search":  # the same temperature schedule
            assert b["temperature"] == a["temperature"]
            assert b["cost"] == pytest.approx(a["cost"], rel=1e-3)
    # The searched architecture after 12 steps of Gumbel samples seeded by (seed, step).
    a, b = (torch.load(d / "checkpoints" / "search.pt")["model"] for d in (single, ddp))
    assert _max_difference(a, b, "zb_selectors") < LOGIT_TOLERANCE
    assert _max_difference(a, b, "logits") < LOGIT_TOLERANCE
    assert _max_difference(a, b, "clips") < LOGIT_TOLERANCE
    decisions = _channel_decisions(a) == _channel_decisions(b)
    assert len(decisions) == 394 and float(decisions.float().mean()) >= 0.98
    first, second = (json.loads((d / "result.json").read_text()) for d in (single, ddp))
    assert second["config"] == first["config"]


def test_two_ranks_stay_identical_and_follow_one_process(tmp_path: Path) -> None:
    script = tmp_path / "record.py"
    script.write_text(SCRIPT)
    config = json.dumps(API_CONFIG.to_dict())
    env = _env()
    args = [str(script), str(tmp_path / "single"), str(tmp_path), config]
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    _torchrun([str(script), str(tmp_path / "ddp"), str(tmp_path), config])
    single = torch.load(tmp_path / "rank0-of-1.pt", weights_only=False)
    rank0 = torch.load(tmp_path / "rank0-of-2.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1-of-2.pt", weights_only=False)

    # Every checkpoint of every phase is bit-identical on the two ranks: weights, architecture
    # logits, activation clips, BatchNorm running statistics and batch counts.
    phases = [(phase, epoch) for phase, epoch, _ in rank0["saved"]]
    assert phases == [(p, e) for p, e, _ in single["saved"]]
    assert phases == [("warmup", 1), ("warmup", 2), ("search", 1), ("search", 2), ("finetune", 1)]
    for (_, _, a), (_, _, b) in zip(rank0["saved"], rank1["saved"]):
        assert a.keys() == b.keys()
        assert all(_same(a[k], b[k]) for k in a)
    assert rank0["result"] == rank1["result"]

    # Two ranks of 32 samples with global-batch BatchNorm follow one process on 64.
    for (phase, epoch, a), (_, _, b) in zip(single["saved"], rank0["saved"]):
        if phase == "warmup":
            assert _max_difference(a, b, "") < WARMUP_TOLERANCE, (phase, epoch)
            assert torch.equal(a["bn1.num_batches_tracked"], b["bn1.num_batches_tracked"])
        elif phase == "search":
            for part in ("zb_selectors", "logits", "clips"):
                assert _max_difference(a, b, part) < LOGIT_TOLERANCE_AFTER_WARMUP, (phase, part)
            decisions = _channel_decisions(a) == _channel_decisions(b)
            assert float(decisions.float().mean()) >= 0.98
    # The budget controller (rank 0, broadcast) gave the strengths of the single process.
    for name in ("single", "ddp"):
        assert len(_lines(tmp_path / name)) == 5  # rank 1 wrote no line
    for a_line, b_line in zip(_lines(tmp_path / "single"), _lines(tmp_path / "ddp")):
        if a_line["phase"] == "search":
            assert b_line["temperature"] == a_line["temperature"]
            assert b_line["strength"] == pytest.approx(a_line["strength"], rel=1e-6)
    assert rank0["result"]["budget"]["met"]
    assert rank0["result"]["architecture"] == single["result"]["architecture"]


def _as_torchrun_rank_0_of_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like the only rank torchrun started (a free local port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    variables = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**variables, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ZEROBIT_BACKEND", "gloo")


def test_shutdown_ends_only_the_group_that_setup_started(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_torchrun_rank_0_of_1(monkeypatch)
    try:
        assert distributed.setup().enabled and dist.is_initialized()
        distributed.shutdown()
        assert not dist.is_initialized()
        distributed.shutdown()  # a second call, or one in a plain process, does nothing
        # A group the caller started (the Python API inside their own job) stays theirs.
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        assert distributed.setup().enabled
        distributed.shutdown()
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_command_under_torchrun_ends_its_group_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every rank tears its group down once all are done, not in the exit handlers of a process
    # whose interpreter is already finalizing.
    _as_torchrun_rank_0_of_1(monkeypatch)
    try:
        assert main([*SEARCH, "--search-epochs", "1", "--out", str(tmp_path / "run")]) == 0
        assert (tmp_path / "run" / "result.json").exists()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_the_documented_training_loop_runs_in_one_process() -> None:
    # docs/scaling.md's loop; alone, setup() is rank 0 of 1 and DDP is left out.
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/scaling.md", "exec"), {"__name__": "doc"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the nccl path needs a CUDA GPU")
def test_nccl_ranks_on_gpus_stay_identical(tmp_path: Path) -> None:
    nproc = min(2, torch.cuda.device_count())
    script = tmp_path / "record.py"
    script.write_text(SCRIPT)
    config = json.dumps(API_CONFIG.to_dict())
    _torchrun([str(script), str(tmp_path / "gpu"), str(tmp_path), config], nproc, "nccl")
    ranks = [
        torch.load(tmp_path / f"rank{r}-of-{nproc}.pt", weights_only=False) for r in range(nproc)
    ]
    for other in ranks[1:]:
        for (_, _, a), (_, _, b) in zip(ranks[0]["saved"], other["saved"]):
            assert all(_same(a[k], b[k]) for k in a)
    assert ranks[0]["result"]["budget"]["met"]
    assert len(ranks[0]["saved"]) == 5
