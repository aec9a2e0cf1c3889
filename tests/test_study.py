# SPDX-License-Identifier: Apache-2.0
# Sweeps as Optuna studies: worker processes on SQLite and PostgreSQL, a killed worker, reports.
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zerobit.cli import main
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import RunConfig

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from zerobit.train.study import Heartbeat, create_study, report, work  # noqa: E402

#: Points of every study: plain strengths (no greedy budget step, so each trial is short).
STRENGTHS = (0.5, 2.0, 8.0)
#: Search epochs per point: long enough (about 2 s) to kill a worker in the middle of one.
SEARCH_EPOCHS = 12
CONFIG = RunConfig(
    dataset="digits",
    subset=128,
    model="mlp",
    act_bits=(8,),
    warmup=PhaseConfig(1, batch_size=64),
    search=PhaseConfig(SEARCH_EPOCHS, batch_size=64),
    finetune=PhaseConfig(0, batch_size=64),
)
#: Workers beat every second; a trial silent for 4 s is failed and retried.
HEARTBEAT = Heartbeat(interval=1, grace_period=4, max_retry=2)
CLI_CONFIG = [
    "--dataset", "digits", "--subset", "128", "--model", "mlp", "--act-bits", "8",
    "--batch-size", "64", "--warmup-epochs", "1", "--search-epochs", str(SEARCH_EPOCHS),
    "--finetune-epochs", "0", "--lr-schedule", "constant",
    "--strengths", ",".join(map(str, STRENGTHS)),
]  # fmt: skip


def _worker(url: str, name: str, log: Path, *command: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "zerobit", *command, "--storage", url, "--study", name]
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    assert process.wait(timeout) == 0, log.read_text()[-3000:]


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _assert_each_point_once(trials: list[optuna.trial.FrozenTrial]) -> None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["point"] for t in complete) == list(range(len(STRENGTHS)))
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]


def test_sweep_command_and_a_worker_share_one_sqlite_study(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    url = f"sqlite:///{out / 'study.db'}"
    create_study(CONFIG, out, url, "sweep", strengths=STRENGTHS, heartbeat=HEARTBEAT)
    # `zerobit sweep` joins the study (same points: nothing enqueued twice) and works on it
    # with a `zerobit worker`; then it reports.
    logs = [tmp_path / "sweep.log", tmp_path / "worker.log"]
    sweeper = _worker(url, "sweep", logs[0], "sweep", *CLI_CONFIG, "--out", str(out))
    worker = _worker(url, "sweep", logs[1], "worker")
    _wait(sweeper, logs[0])
    _wait(worker, logs[1])

    trials = _trials(url, "sweep")
    assert len(trials) == len(STRENGTHS)  # no duplicate, no lost trial, nothing sampled
    _assert_each_point_once(trials)
    workers = {f"{socket.gethostname()}:{p.pid}" for p in (sweeper, worker)}
    assert {t.user_attrs["worker"] for t in trials} <= workers
    for t in trials:  # each trial's values are its own point's result
        assert t.user_attrs["name"] == f"strength-{STRENGTHS[t.params['point']]:g}"
        result = json.loads((out / t.user_attrs["name"] / "result.json").read_text())
        assert t.values == [result["val_accuracy"], result["costs"]["size_bytes"]]
    # The report of the study: its front is Optuna's Pareto front of the two objectives.
    assert "Pareto front" in (out / "report" / "report.md").read_text()
    assert main(["report", "--storage", url, "--study", "sweep"]) == 0
    summary = report(url, "sweep")
    study = optuna.load_study(study_name="sweep", storage=url)
    assert sorted(summary["front"]) == sorted(t.user_attrs["name"] for t in study.best_trials)
    assert summary["missing"] == []
    warm = (out / "warmup" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["phase"] for line in warm] == ["warmup"]  # built once, shared


def _kill_one_worker_mid_trial(url: str, tmp_path: Path) -> None:
    out = tmp_path / "study"
    create_study(CONFIG, out, url, "kill", strengths=STRENGTHS, heartbeat=HEARTBEAT)
    logs = {}
    workers = {}
    for i in range(2):
        logs[i] = tmp_path / f"worker{i}.log"
        process = _worker(url, "kill", logs[i], "worker")
        workers[f"{socket.gethostname()}:{process.pid}"] = process
    deadline = time.monotonic() + 90
    victim = ""
    while not victim:  # kill a worker once its trial has checkpointed two search epochs
        assert time.monotonic() < deadline, [log.read_text() for log in logs.values()]
        for t in _trials(url, "kill"):
            run_dir = out / t.user_attrs["name"]
            metrics = run_dir / "metrics.jsonl"
            epochs = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            if t.state == TrialState.RUNNING and epochs >= 2 and epochs < SEARCH_EPOCHS:
                victim = t.user_attrs["worker"]
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                break
        time.sleep(0.05)
    survivor = next(name for name in workers if name != victim)
    _wait(workers[survivor], logs[list(workers).index(survivor)], timeout=120)

    trials = _trials(url, "kill")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["worker"] == victim
    assert len(trials) == len(STRENGTHS) + 1  # the retry, and nothing else
    _assert_each_point_once(trials)
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params["point"] == failed[0].params["point"]
    assert retry[0].user_attrs["worker"] == survivor
    # The retry resumed the dead worker's run directory: no search epoch ran twice.
    lines = (out / failed[0].user_attrs["name"] / "metrics.jsonl").read_text().splitlines()
    epochs = [(r["phase"], r["epoch"]) for r in map(json.loads, lines)]
    assert epochs == [("search", e) for e in range(1, SEARCH_EPOCHS + 1)]


def test_a_killed_worker_loses_one_trial_which_is_retried_sqlite(tmp_path: Path) -> None:
    _kill_one_worker_mid_trial(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)


# ------------------------------------------------------------------------------- PostgreSQL
def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own, on loopback at a free port, in a temporary folder."""
    bindir = _postgres_bin()
    if os.environ.get("CI") == "true":  # .ci/run installs both: CI must never skip this test
        assert bindir is not None, "CI: no PostgreSQL server (apt-get install postgresql)"
        import psycopg  # noqa: F401
    pytest.importorskip("psycopg")
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="zerobit-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    run = [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    subprocess.run(run, check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
    subprocess.run([*ctl, "-o", options, "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_killed_worker_loses_one_trial_which_is_retried_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    _kill_one_worker_mid_trial(postgres_url, tmp_path)


# ---------------------------------------------------------------------------------- errors
def test_bad_storage_and_unknown_study_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ValueError, match="no study 'nope'"):
        work(url, "nope")
    assert main(["worker", "--storage", url, "--study", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert main(["worker", "--storage", "study.db", "--study", "x"]) == 2
    assert "not a database URL" in capsys.readouterr().err
    assert main(["report", "--storage", "nodb://x", "--study", "x"]) == 2
    assert "not a database URL" in capsys.readouterr().err
    with pytest.raises(ValueError, match="grace period"):
        Heartbeat(interval=5, grace_period=5)


def test_a_study_starts_from_an_earlier_runs_warm_up(tmp_path: Path) -> None:
    import torch

    from zerobit.train.run import Run

    Run(CONFIG, tmp_path / "earlier").run()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "sweep"
    create_study(CONFIG, out, url, "s", strengths=STRENGTHS, warmup_from=tmp_path / "earlier")
    copied = torch.load(out / "warmup" / "checkpoints" / "warmup.pt", weights_only=True)
    assert copied["source"] == str((tmp_path / "earlier").resolve())
    assert not (out / "warmup" / "metrics.jsonl").exists()  # no warm-up epoch was trained


def test_a_study_planned_with_a_default_written_out_is_the_same_sweep(tmp_path: Path) -> None:
    # Planned while the damping default was the number 20, rejoined under today's unset default
    # (which resolves to 20 steps): the same sweep. Another value is another sweep.
    from dataclasses import replace

    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "sweep"
    first = create_study(replace(CONFIG, budget_damping=20.0), out, url, "s", strengths=STRENGTHS)
    assert CONFIG.budget_damping is None
    again = create_study(CONFIG, out, url, "s", strengths=STRENGTHS)
    assert again.study_name == first.study_name == "s"
    with pytest.raises(ValueError, match="another sweep|different configuration"):
        create_study(replace(CONFIG, budget_damping=7.0), out, url, "s", strengths=STRENGTHS)
