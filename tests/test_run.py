# SPDX-License-Identifier: Apache-2.0
# The run pipeline: every file is written, results are consistent, and resuming is exact.
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import zerobit as zb
from zerobit.train.loop import PhaseConfig
from zerobit.train.run import Run, RunConfig

TINY = RunConfig(
    dataset="digits",
    subset=160,
    model="resnet8",
    warmup=PhaseConfig(epochs=1, batch_size=64),
    search=PhaseConfig(epochs=2, batch_size=64),
    finetune=PhaseConfig(epochs=1, batch_size=64),
    strength=2.0,
)


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timings"}


def test_pipeline_writes_every_file(tmp_path: Path) -> None:
    result = Run(TINY, tmp_path / "run").run()
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text()) == TINY.to_dict()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in lines] == [
        ("warmup", 1),
        ("search", 1),
        ("search", 2),
        ("finetune", 1),
    ]
    for phase in ("warmup", "search", "finetune"):
        ckpt = torch.load(out / "checkpoints" / f"{phase}.pt", weights_only=True)
        assert ckpt["epoch"] == {"warmup": 1, "search": 2, "finetune": 1}[phase]
    stored = json.loads((out / "result.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert set(stored["timings"]) == {"warmup_s", "search_s", "finetune_s"}
    assert "pixel" in stored["dataset"]["preprocessing"]
    # The reported costs are those of the architecture it reports, rebuilt independently.
    arch = stored["architecture"]
    kept = sum(b > 0 for e in arch.values() for b in e.get("weight_bits", []))
    assert 0 < kept <= sum(len(e.get("weight_bits", [])) for e in arch.values())
    assert stored["costs"]["size_bytes"] == stored["costs"]["size_bits"] / 8
    assert stored["costs_all_8bit"]["size_bits"] == 8 * sum(
        m.weight.numel()
        for m in zb.models.ResNet8((1, 8, 8)).modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    )
    assert 0.0 <= stored["test_accuracy"] <= 1.0


class _Interrupted(Exception):
    pass


class _CrashingRun(Run):
    """Dies at the first search epoch's checkpoint, just before or just after writing it."""

    def __init__(self, *args: object, when: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.when = when

    def _save(self, obj: dict, phase: str) -> None:
        first_search = phase == "search" and obj.get("epoch") == 1
        if first_search and self.when == "before":
            raise _Interrupted
        super()._save(obj, phase)
        if first_search and self.when == "after":
            raise _Interrupted


@pytest.mark.parametrize("when", ["before", "after"])
def test_interrupted_and_resumed_run_gives_the_same_result(tmp_path: Path, when: str) -> None:
    reference = Run(TINY, tmp_path / "straight").run()
    with pytest.raises(_Interrupted):
        _CrashingRun(TINY, tmp_path / "resumed", when=when).run()
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = Run(TINY, tmp_path / "resumed").run(resume=True)
    assert without_timings(resumed) | {"name": None} == without_timings(reference) | {"name": None}
    # Killed between an epoch's log line and its checkpoint, or just after both: the log holds
    # every epoch exactly once, in order, as the uninterrupted run's does.
    lines = [
        json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert [(r["phase"], r["epoch"]) for r in lines] == [
        (r["phase"], r["epoch"]) for r in map(json.loads, straight)
    ]
    for a, b in zip(lines, map(json.loads, straight)):
        assert a["val_metric"] == b["val_metric"]


COSINE = RunConfig(
    **{
        **TINY.to_dict(),
        "search": PhaseConfig(epochs=2, batch_size=64, lr_schedule="cosine"),
        "finetune": PhaseConfig(epochs=2, batch_size=64, lr=3e-3, lr_schedule="cosine"),
    }
)


def test_lr_schedules_set_the_weights_rate_of_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates: dict[int, list[float]] = {}
    order: list[int] = []
    step = torch.optim.Adam.step

    def recording_step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        if id(self) not in rates:
            order.append(id(self))
        rates.setdefault(id(self), []).append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    Run(COSINE, tmp_path / "run").run()
    warmup, weights, logits, finetune = (rates[key] for key in order)
    assert warmup == [TINY.warmup.lr] * len(warmup)  # constant
    assert logits == [COSINE.search.arch_lr] * len(logits)  # never scheduled
    for phase, seen in ((COSINE.search, weights), (COSINE.finetune, finetune)):
        total = len(seen)
        assert total % phase.epochs == 0
        expected = [phase.lr * (1 + math.cos(math.pi * k / total)) / 2 for k in range(total)]
        assert seen == pytest.approx(expected, rel=1e-12)
        assert seen[0] == phase.lr and seen[-1] < phase.lr * 0.1  # decays to near 0


def test_a_scheduled_run_resumes_at_the_rate_it_stopped(tmp_path: Path) -> None:
    reference = Run(COSINE, tmp_path / "straight").run()
    with pytest.raises(_Interrupted):
        _CrashingRun(COSINE, tmp_path / "resumed", when="after").run()
    resumed = Run(COSINE, tmp_path / "resumed").run(resume=True)
    assert without_timings(resumed) | {"name": None} == without_timings(reference) | {"name": None}
    assert without_timings(reference) != without_timings(Run(TINY, tmp_path / "flat").run())


def test_lr_schedule_is_validated() -> None:
    from zerobit.train.loop import lr_factor

    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        PhaseConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        lr_factor("linear", 0.5)
    assert lr_factor("constant", 0.7) == 1.0
    assert lr_factor("cosine", 0.0) == 1.0 and lr_factor("cosine", 1.0) == 0.0
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)


def test_a_run_from_another_runs_warm_up_equals_one_that_trains_its_own(tmp_path: Path) -> None:
    # Another space and strength, the same data, model, seed and warm-up phase: the warm-up can
    # be shared, and starting from it must give what training it again gives.
    other = RunConfig(**{**TINY.to_dict(), "weight_bits": (0, 4, 8), "strength": 0.5})
    source = Run(TINY, tmp_path / "source")
    source.run()
    reused = Run(other, tmp_path / "reused").run(warmup_from=tmp_path / "source")
    own = Run(other, tmp_path / "own").run()
    ignore = {"name": None, "warmup_from": None}
    assert without_timings(reused) | ignore == without_timings(own) | ignore
    assert reused["warmup_from"] == str((tmp_path / "source").resolve())
    assert own["warmup_from"] is None
    assert reused["timings"]["warmup_s"] == source.timings["warmup_s"]  # the original's seconds
    phases = [
        json.loads(line)["phase"]
        for line in (tmp_path / "reused" / "metrics.jsonl").read_text().splitlines()
    ]
    assert phases == ["search", "search", "finetune"]  # no warm-up epoch was trained
    # A copy of the copy still names the run that trained it.
    again = Run(other, tmp_path / "again").run(warmup_from=tmp_path / "reused")
    assert again["warmup_from"] == reused["warmup_from"]


class _WarmupCrash(Run):
    def _save(self, obj: dict, phase: str) -> None:
        super()._save(obj, phase)
        raise _Interrupted


def test_a_warm_up_trained_otherwise_or_unfinished_is_refused(tmp_path: Path) -> None:
    Run(TINY, tmp_path / "source").run()
    reseeded = RunConfig(**{**TINY.to_dict(), "seed": 1, "subset": 150})
    with pytest.raises(ValueError, match=r"trained differently: subset 160 there, 150 .*seed 0"):
        Run(reseeded, tmp_path / "a").run(warmup_from=tmp_path / "source")
    longer = RunConfig(**{**TINY.to_dict(), "warmup": PhaseConfig(epochs=2, batch_size=64)})
    with pytest.raises(_Interrupted):
        _WarmupCrash(longer, tmp_path / "half").run()
    with pytest.raises(ValueError, match="stopped at epoch 1 of 2; finish it first"):
        Run(longer, tmp_path / "b").run(warmup_from=tmp_path / "half")
    with pytest.raises(ValueError, match="holds no float warm-up"):
        Run(TINY, tmp_path / "c").run(warmup_from=tmp_path / "nothing")
    for refused in ("a", "b", "c"):  # nothing was trained or copied
        assert not (tmp_path / refused / "checkpoints" / "warmup.pt").exists()


def test_existing_run_with_other_config_is_refused(tmp_path: Path) -> None:
    Run(TINY, tmp_path / "run").run()
    other = RunConfig(**{**TINY.to_dict(), "strength": 0.5})
    with pytest.raises(ValueError, match="different configuration"):
        Run(other, tmp_path / "run").run()
    with pytest.raises(ValueError, match="already holds a finished run"):
        Run(TINY, tmp_path / "run").run()
    attached = RunConfig(**{**TINY.to_dict(), "detach_input_channels": False})
    with pytest.raises(ValueError, match="different configuration"):
        Run(attached, tmp_path / "run").run()
    with pytest.raises(ValueError, match="budget_signal must be one of"):
        RunConfig(**{**TINY.to_dict(), "budget_signal": "mean"})
    with pytest.raises(ValueError, match="weight_range must be one of"):
        RunConfig(**{**TINY.to_dict(), "weight_range": "percentile"})


def test_run_recorded_with_a_boolean_weight_compensation_still_resumes(tmp_path: Path) -> None:
    for legacy, mode in ((True, "initial"), (False, "off")):
        config = RunConfig(**{**TINY.to_dict(), "weight_compensation": mode})
        run = Run(config, tmp_path / mode)
        run.prepare(resume=False)
        path = tmp_path / mode / "config.json"
        stored = json.loads(path.read_text())
        assert stored["weight_compensation"] == mode
        path.write_text(json.dumps({**stored, "weight_compensation": legacy}))  # before the modes
        assert RunConfig.from_dict(json.loads(path.read_text())) == config
        Run(config, tmp_path / mode).prepare(resume=True)
        other = RunConfig(**{**TINY.to_dict(), "weight_compensation": "annealed"})
        with pytest.raises(ValueError, match="different configuration"):
            Run(other, tmp_path / mode).prepare(resume=True)


def test_run_made_before_a_config_key_existed_still_resumes(tmp_path: Path) -> None:
    # the rules before the keys: min-max weight ranges, an undamped budget controller
    old = RunConfig(**{**TINY.to_dict(), "weight_range": "minmax", "budget_damping": 0.0})
    run = Run(old, tmp_path / "run")
    run.prepare(resume=False)
    path = tmp_path / "run" / "config.json"
    stored = json.loads(path.read_text())
    del stored["detach_input_channels"]  # as written by zerobit before the keys existed
    del stored["budget_signal"]
    del stored["weight_range"]
    del stored["distill"]
    del stored["distill_temperature"]
    del stored["budget_damping"]
    for phase in ("warmup", "search", "finetune"):
        del stored[phase]["lr_schedule"]
    path.write_text(json.dumps(stored))
    assert RunConfig.from_dict(stored).weight_range == "minmax"  # whatever today's default
    assert RunConfig.from_dict(stored).budget_damping == 0.0  # they ran undamped
    Run(old, tmp_path / "run").prepare(resume=True)
    assert json.loads(path.read_text()) == old.to_dict()
    assert TINY.budget_damping != 0.0  # today's default differs: resuming with it is refused
    with pytest.raises(ValueError, match="different configuration"):
        Run(TINY, tmp_path / "run").prepare(resume=True)


def test_run_resumes_when_a_default_it_wrote_out_is_now_left_unset(tmp_path: Path) -> None:
    # Runs written while the damping default was a number (20) resume under today's unset
    # default, which resolves to the same 20 steps; a different value is still refused.
    for target, written in (("size=2kB", 20.0), ("ne16=1e5", 0.0)):
        config = replace(TINY, target=target, act_bits=(8,))
        assert config.budget_damping is None and config.controller_damping() == written
        out = tmp_path / target.split("=")[0]
        Run(replace(config, budget_damping=written), out).prepare(resume=False)
        Run(config, out).prepare(resume=True)
        other = replace(config, budget_damping=written + 5)
        with pytest.raises(ValueError, match="different configuration"):
            Run(other, out).prepare(resume=True)


def test_run_passes_the_weight_range_to_the_search_and_the_frozen_model(tmp_path: Path) -> None:
    for weight_range in ("minmax", "mse"):
        config = RunConfig(**{**TINY.to_dict(), "weight_range": weight_range})
        smodel = Run(config, tmp_path / weight_range)._convert(zb.models.ResNet8((1, 8, 8)))
        assert smodel.space.weight_range == weight_range
        assert {layer.weight_range for layer in smodel.layers().values()} == {weight_range}
        frozen = smodel.freeze()
        assert {layer.weight_range for layer in frozen.layers().values()} == {weight_range}


def test_run_passes_the_detach_policy_to_the_search(tmp_path: Path) -> None:
    for detach, expected in ((None, True), (False, False)):  # None: size detached (the paper)
        config = RunConfig(**{**TINY.to_dict(), "detach_input_channels": detach})
        run = Run(config, tmp_path / "run")
        smodel = run._convert(zb.models.ResNet8((1, 8, 8)))
        assert [t.detach_inputs for t in smodel._terms] == [expected]


def test_strength_ramp_is_a_function_of_progress() -> None:
    from zerobit.train.run import strength_at

    ramp = RunConfig(**{**TINY.to_dict(), "strength_ramp": True, "strength": 2.0})
    assert strength_at(ramp, 0.0) == pytest.approx(0.02)
    assert strength_at(ramp, 0.25) == pytest.approx(2.0 * (0.01 + 0.99 * 0.5))
    assert strength_at(ramp, 0.5) == strength_at(ramp, 1.0) == 2.0
    assert strength_at(TINY, 0.0) == 2.0


def test_bad_run_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="strength"):
        RunConfig(strength=-1.0)
    with pytest.raises(ValueError, match="unknown run configuration keys"):
        RunConfig.from_dict({"strenght": 1.0})
    assert not math.isnan(TINY.final_temperature)


def test_distillation_term_matches_its_definition() -> None:
    from zerobit.train.loop import distillation_loss

    torch.manual_seed(0)
    student, teacher, temperature = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5), 3.0
    p = torch.softmax(student.detach() / temperature, dim=1)
    q = torch.softmax(teacher / temperature, dim=1)
    expected = temperature**2 * (q * (q.log() - p.log())).sum(dim=1).mean()
    loss = distillation_loss(student, teacher, temperature)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()  # d/ds of T^2 KL: T (p - q), averaged over the batch
    assert torch.allclose(student.grad, temperature * (p - q) / 8, atol=1e-6)
    assert float(distillation_loss(teacher, teacher, temperature)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="distill must be in"):
        RunConfig(distill=1.5)
    with pytest.raises(ValueError, match="distill_temperature"):
        RunConfig(distill=0.5, distill_temperature=0.0)


def test_distillation_mixes_the_warm_up_models_term_into_the_loss(tmp_path: Path) -> None:
    from zerobit.train.loop import distillation_loss

    config = RunConfig(**{**TINY.to_dict(), "distill": 0.25, "distill_temperature": 2.0})
    run = Run(config, tmp_path / "run")
    run.run()
    # The teacher is the float warm-up's best epoch, in eval mode, and is never trained.
    warmup = torch.load(tmp_path / "run" / "checkpoints" / "warmup.pt", weights_only=True)
    assert run._teacher is not None and not run._teacher.training
    teacher_state = run._teacher.state_dict()
    assert all(torch.equal(teacher_state[k], v) for k, v in warmup["best_model"].items())
    assert not any(p.requires_grad for p in run._teacher.parameters())
    x, y = run.validation_batch(16), torch.arange(16) % 10
    output = torch.randn(16, 10)
    expected = 0.75 * torch.nn.functional.cross_entropy(output, y) + 0.25 * distillation_loss(
        output, run._teacher(x), 2.0
    )
    assert torch.allclose(run._task_loss(output, x, y), expected)
    assert Run(TINY, tmp_path / "plain")._task_loss(output, x, y) == pytest.approx(
        float(torch.nn.functional.cross_entropy(output, y))
    )


def test_full_distillation_never_reads_the_training_labels(tmp_path: Path) -> None:
    import shutil

    from torch.utils.data import TensorDataset

    from zerobit.data import load_dataset

    data = load_dataset("digits", None, TINY.subset, TINY.seed, TINY.val_fraction)
    x, y = data.train.tensors
    shuffled = data._replace(train=TensorDataset(x, (y + 3) % 10))  # every label wrong
    base = RunConfig(**{**TINY.to_dict(), "model": "mlp"})
    warm_run = Run(base, tmp_path / "warm", data=data)
    warm_run.prepare(resume=False)
    warm_run.warm_up()

    def run(distill: float, splits: object, name: str) -> dict:
        config = RunConfig(**{**base.to_dict(), "distill": distill})
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        warm = tmp_path / "warm" / "checkpoints" / "warmup.pt"  # one warm-up for every run
        shutil.copyfile(warm, tmp_path / name / "checkpoints" / "warmup.pt")
        result = Run(config, tmp_path / name, data=splits).run(resume=True)
        return {k: result[k] for k in ("architecture", "val_accuracy", "costs")}

    # With the labels' weight at 0, search and fine-tuning follow the teacher alone.
    assert run(1.0, data, "full") == run(1.0, shuffled, "full-shuffled")
    # With any weight left on them, wrong labels give another model.
    assert run(0.5, data, "half") != run(0.5, shuffled, "half-shuffled")


def test_early_stopping_ends_a_phase_without_progress(tmp_path: Path) -> None:
    config = RunConfig(
        **{
            **TINY.to_dict(),
            "warmup": PhaseConfig(5, batch_size=64, patience=2),
            "search": PhaseConfig(1, batch_size=64),
            "finetune": PhaseConfig(0),
        }
    )
    Run(config, tmp_path / "run", metric=lambda logits, y: 0.5).run()  # never improves
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["phase"] == "warmup"] == [1, 2, 3]
