# SPDX-License-Identifier: Apache-2.0
# Sweeps as Optuna studies: one trial per sweep point, a shared warm-up, workers on any machine.
"""A sweep stored in a database, run by workers on any number of machines.

:func:`create_study` builds the sweep's shared warm-up once (under a file lock in the artifacts
folder), computes its points (the budget ladder, or the given strengths, of
:func:`zerobit.train.sweep.plan_points`) and enqueues one Optuna trial per point: trial ``i``
carries the fixed parameter ``point = i``. The study has two objectives, validation accuracy
(maximized) and cost (minimized), so Optuna's ``best_trials`` is the sweep's Pareto front.

:func:`work` is a worker: it takes waiting trials one at a time and runs each point in the
artifacts folder (``<artifacts>/<point name>``, a resumable run directory), beating Optuna's
heartbeat meanwhile. A worker that dies stops beating; the next worker that looks for work
after the grace period fails its trial, and Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues
a copy, which resumes the run directory from its last checkpoint. A worker only ever takes
enqueued trials (never lets Optuna sample new ones), so no point runs twice; it stops when
no trial is waiting or running.

The storage is any database URL SQLAlchemy and Optuna accept: ``sqlite:///path/study.db``
(the default, ``<artifacts>/study.db``; one machine, or a filesystem with working locks) or
``postgresql://user:password@host:5432/db`` for workers on several machines, which must then
all see the artifacts folder (e.g. over NFS), at the same path or at the one ``work`` is given.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zerobit import __version__
from zerobit.train.run import RunConfig
from zerobit.train.sweep import REPORT_COST, plan_points, run_point

if TYPE_CHECKING:
    import optuna

#: Database file of the default storage, in the artifacts folder.
DEFAULT_DATABASE = "study.db"
#: Lock file, in the artifacts folder, under which the warm-up is built and points enqueued.
WARMUP_LOCK = "warmup.lock"
#: Objectives of every study, in order: validation accuracy, cost.
DIRECTIONS: tuple[Literal["maximize", "minimize"], ...] = ("maximize", "minimize")
#: Study attribute that marks a zerobit sweep (its value: the zerobit version that made it).
MARKER = "zerobit_sweep"


@dataclass(frozen=True)
class Heartbeat:
    """How workers show they are alive, stored with the study so every worker agrees.

    Attributes:
        interval: Seconds between two heartbeats of a running trial.
        grace_period: Seconds without a heartbeat after which a running trial counts as dead
            (None: twice ``interval``).
        max_retry: Times a dead trial is retried (None: without limit).
    """

    interval: int = 60
    grace_period: int | None = None
    max_retry: int | None = 3

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"heartbeat interval must be >= 1 second, got {self.interval}")
        if self.grace_period is not None and self.grace_period <= self.interval:
            raise ValueError(
                f"grace period ({self.grace_period} s) must exceed the heartbeat interval "
                f"({self.interval} s), or a live worker's trial would be failed"
            )
        if self.max_retry is not None and self.max_retry < 0:
            raise ValueError(f"max_retry must be >= 0 or None, got {self.max_retry}")


def default_storage(out: str | os.PathLike[str]) -> str:
    """Return the URL of the default storage: an SQLite file in the artifacts folder."""
    return f"sqlite:///{(Path(out) / DEFAULT_DATABASE).resolve()}"


def create_study(
    base: RunConfig,
    out: str | os.PathLike[str],
    storage: str | None = None,
    name: str | None = None,
    points: int | None = 5,
    strengths: Sequence[float] | None = None,
    heartbeat: Heartbeat | None = None,
    warmup_from: str | os.PathLike[str] | None = None,
) -> optuna.Study:
    """Create (or join) the study of a sweep: shared warm-up, one enqueued trial per point.

    Calling it again with the same arguments (another machine, a restart) joins the study
    without enqueuing anything twice.

    Args:
        base: The sweep's configuration (see :func:`zerobit.train.sweep.sweep`).
        out: The artifacts folder: the warm-up, one run directory per point, the report.
        storage: Database URL (default: :func:`default_storage` of ``out``).
        name: Study name (default: the artifacts folder's name).
        points: Number of budgets of the ladder (without ``strengths``).
        strengths: Plain strengths to run instead of the ladder.
        heartbeat: Heartbeat settings of the workers (default: :class:`Heartbeat`).
        warmup_from: A run directory or sweep whose float warm-up the sweep starts from
            (see :func:`zerobit.train.sweep.plan_points`).

    Raises:
        ValueError: For an unusable storage, or a study of that name holding another sweep.
    """
    import optuna
    from filelock import FileLock

    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(folder)
    name = name or folder.name
    heartbeat = heartbeat or Heartbeat()
    rdb = _storage(url)  # a bad URL or an unreachable server fails before any training
    with FileLock(str(folder / WARMUP_LOCK)):
        named = plan_points(base, folder, [base], points, strengths, warmup_from)
        planned = [{"name": n, "config": c.to_dict()} for n, c in named]
        with _storage_errors(url):
            study = optuna.create_study(
                storage=rdb,
                study_name=name,
                directions=list(DIRECTIONS),
                load_if_exists=True,
            )
        attrs = study.user_attrs
        if MARKER in attrs:
            if _resolved(attrs["points"]) != _resolved(planned):
                raise ValueError(
                    f"study {name!r} in {_shown(url)} holds another sweep; give another --study"
                )
            return study
        if study.trials:
            raise ValueError(f"study {name!r} in {_shown(url)} is not a zerobit sweep")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_accuracy", REPORT_COST[base.cost]])
        study.set_user_attr("points", planned)
        study.set_user_attr("artifacts", str(folder))
        study.set_user_attr("report_cost", REPORT_COST[base.cost])
        study.set_user_attr("heartbeat", asdict(heartbeat))
        for index, (point, _) in enumerate(named):
            study.enqueue_trial({"point": index}, user_attrs={"name": point})
        study.set_user_attr(MARKER, __version__)  # last: the study is complete from here on
    return study


def _resolved(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return planned points with their configurations resolved (:meth:`RunConfig.resolved`).

    A study planned while a default was written out is the same sweep once that default is unset.
    """
    return [{**p, "config": RunConfig.from_dict(p["config"]).resolved().to_dict()} for p in points]


def work(
    storage: str,
    name: str,
    out: str | os.PathLike[str] | None = None,
) -> list[int]:
    """Run the study's waiting trials until none is waiting or running; return their numbers.

    Args:
        storage: Database URL of the study.
        name: Study name.
        out: The artifacts folder as this machine sees it (default: the path stored in the
            study by :func:`create_study`).

    Raises:
        ValueError: For an unusable storage, an unknown study, a study that is not a sweep,
            or a worker started by torchrun (a worker is one process).
    """
    import optuna
    from optuna.trial import TrialState

    from zerobit.train.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise ValueError(
            "a worker runs one trial at a time in one process; start it without torchrun"
        )
    attrs = _load(storage, name).user_attrs
    settings = Heartbeat(**attrs["heartbeat"])
    rdb = _storage(storage, settings)
    study = optuna.load_study(study_name=name, storage=rdb)
    folder = Path(out) if out is not None else Path(attrs["artifacts"])
    points = [(p["name"], RunConfig.from_dict(p["config"])) for p in attrs["points"]]
    done: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while True:
            with _claim_lock(storage, folder):
                optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, retried
                trial_id = _claim(study, rdb)
            if trial_id is None:
                states = {t.state for t in study.get_trials(deepcopy=False)}
                if not states & {TrialState.WAITING, TrialState.RUNNING}:
                    return done
                time.sleep(settings.interval)  # others are running: watch their heartbeats
                continue
            with _beating(rdb, trial_id, settings.interval):
                trial = optuna.Trial(study, trial_id)
                _run_trial(study, trial, rdb.get_trial(trial_id), points, folder, attrs, settings)
            done.append(trial.number)


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    frozen: optuna.trial.FrozenTrial,
    points: list[tuple[str, RunConfig]],
    folder: Path,
    attrs: dict[str, Any],
    settings: Heartbeat,
) -> None:
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    index = trial.suggest_int("point", 0, len(points) - 1)
    name, config = points[index]
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        result = run_point(folder, name, config, resume=True)
    except KeyboardInterrupt:  # stopped by hand: give the point back to the other workers
        study.tell(trial, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback(settings.max_retry)(study, frozen)
        raise
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    cost = float(result["costs"][attrs["report_cost"]])
    study.tell(trial, [float(result["val_accuracy"]), cost])


def report(
    storage: str,
    name: str,
    out: str | os.PathLike[str] | None = None,
    artifacts: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write the report of a study's complete trials; return it with the Pareto front.

    Args:
        storage: Database URL of the study.
        name: Study name.
        out: The report folder (default: ``<artifacts>/report``).
        artifacts: The artifacts folder as this machine sees it (default: the stored path).

    Returns:
        The summary of :func:`zerobit.report.write_report` (its ``"front"``: names by
        increasing cost) plus ``"pareto_trials"``, the numbers of Optuna's ``best_trials``,
        and ``"missing"``, the points without a complete trial.

    Raises:
        ValueError: For an unusable storage, an unknown study, or a study with no complete trial.
    """
    from optuna.trial import TrialState

    from zerobit.report import write_report

    study = _load(storage, name)
    attrs = study.user_attrs
    folder = Path(artifacts) if artifacts is not None else Path(attrs["artifacts"])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = [p["name"] for p in attrs["points"]]
    finished = {t.params["point"] for t in complete}
    if not complete:
        raise ValueError(f"study {name!r} has no complete trial yet; run `zerobit worker`")
    runs = [folder / names[i] for i in sorted(finished)]
    summary = write_report(runs, Path(out) if out else folder / "report", cost=attrs["report_cost"])
    summary["pareto_trials"] = sorted(t.number for t in study.best_trials)
    summary["missing"] = [n for i, n in enumerate(names) if i not in finished]
    return summary


def sweep_study(
    base: RunConfig,
    out: str | os.PathLike[str],
    storage: str | None = None,
    name: str | None = None,
    points: int | None = 5,
    strengths: Sequence[float] | None = None,
    heartbeat: Heartbeat | None = None,
    warmup_from: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Create (or join) a sweep's study, work on it until it is done, and report it.

    Other machines join with ``zerobit worker --storage URL --study NAME`` (:func:`work`).
    Arguments as :func:`create_study`; returns :func:`report`'s summary.

    Raises:
        ValueError: As :func:`create_study`, or if a point failed more often than allowed.
    """
    study = create_study(base, out, storage, name, points, strengths, heartbeat, warmup_from)
    url = storage or default_storage(Path(out).resolve())
    work(url, study.study_name, out)
    summary = report(url, study.study_name, artifacts=out)
    if summary["missing"]:
        raise ValueError(
            f"points {summary['missing']} failed (see the failed trials of study "
            f"{study.study_name!r}); the report of the others is in {summary['report']}"
        )
    return summary


# --------------------------------------------------------------------------------- storage
def _storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.RDBStorage:
    """Open the RDB storage at ``url``, with the workers' heartbeat if given."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}  # wait for the other workers' writes
    with _storage_errors(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        options: dict[str, Any] = {}
        if heartbeat is not None:
            options = {
                "heartbeat_interval": heartbeat.interval,
                "grace_period": heartbeat.grace_period,
                "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(
                    heartbeat.max_retry
                ),
            }
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, **options)


@contextlib.contextmanager
def _storage_errors(url: str) -> Iterator[None]:
    """Turn a bad URL, a missing driver or an unreachable server into a ValueError."""
    import sqlalchemy.exc

    hint = "e.g. sqlite:///study.db or postgresql://user:password@host:5432/database"
    try:
        yield
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as error:
        raise ValueError(
            f"storage {_shown(url)!r} is not a database URL ({error}); {hint}"
        ) from None
    except ImportError as error:
        raise ValueError(f"storage {_shown(url)!r} needs a database driver: {error}") from None
    except sqlalchemy.exc.OperationalError as error:
        raise ValueError(f"cannot use the database {_shown(url)}: {error.orig}") from None


def _shown(url: str) -> str:
    """Return the URL without its password."""
    import sqlalchemy.engine

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing to hide
        return url


def _load(storage: str, name: str) -> optuna.Study:
    """Load a zerobit sweep's study (no heartbeat: for reading)."""
    import optuna

    rdb = _storage(storage)
    names = optuna.get_all_study_names(rdb)
    if name not in names:
        raise ValueError(
            f"no study {name!r} in {_shown(storage)}; it holds {sorted(names) or 'no study'} "
            "(create one with `zerobit sweep --storage URL --study NAME`)"
        )
    study = optuna.load_study(study_name=name, storage=rdb)
    if MARKER not in study.user_attrs:
        raise ValueError(f"study {name!r} in {_shown(storage)} is not a zerobit sweep")
    return study


@contextlib.contextmanager
def _claim_lock(storage: str, folder: Path) -> Iterator[None]:
    """Serialize claims where the database cannot (SQLite reads outside transactions).

    PostgreSQL and MySQL lock the trial's row (``SELECT ... FOR UPDATE``) when Optuna changes
    its state, so two workers cannot both take one trial or both fail one stale trial. SQLite
    via Python's driver reads outside a transaction, so there a file lock beside the database
    does it.
    """
    if not storage.startswith("sqlite"):
        yield
        return
    import sqlalchemy.engine
    from filelock import FileLock

    database = sqlalchemy.engine.make_url(storage).database
    path = Path(database) if database and database != ":memory:" else folder / DEFAULT_DATABASE
    with FileLock(str(path) + ".lock"):
        yield


def _claim(study: optuna.Study, storage: optuna.storages.RDBStorage) -> int | None:
    """Take one waiting trial (WAITING -> RUNNING, first heartbeat); return its id, or None.

    The first heartbeat is recorded at once: Optuna never fails a running trial that has none,
    so a worker dying before it would leave the trial running for ever.
    """
    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                storage.record_heartbeat(trial_id)
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished by another worker meanwhile
    return None


@contextlib.contextmanager
def _beating(storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> Iterator[None]:
    """Record the trial's heartbeat now and every ``interval`` seconds until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


__all__ = [
    "DEFAULT_DATABASE",
    "Heartbeat",
    "create_study",
    "default_storage",
    "report",
    "sweep_study",
    "work",
]
