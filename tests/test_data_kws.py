# SPDX-License-Identifier: Apache-2.0
# Synthetic espeak-ng keyword spotting: shapes, labels, determinism, cache reuse, voice split.
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import zerobit.data.kws as kws_module
from zerobit.data import (
    KwsRecipe,
    dataset_info,
    espeak_variants,
    espeak_version,
    kws_cache_key,
    load_kws,
    split_voices,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="Debian package espeak-ng not installed"
)
TINY = KwsRecipe(
    keywords=("yes", "no"),
    unknown_words=("cat", "dog"),
    accents=("en-us", "en-gb"),
    voices=("f3", "m3"),
    test_voice_fraction=0.5,
)


class EspeakRecorder:
    """Wraps subprocess.run and records the arguments of every espeak-ng call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        self._run = subprocess.run
        monkeypatch.setattr(kws_module.subprocess, "run", self)

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args[1:]))
        return self._run(args, **kwargs)

    def syntheses(self) -> list[list[str]]:
        return [call for call in self.calls if "-w" in call]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("Debian package espeak-ng not installed")
    directory = tmp_path_factory.mktemp("kws")
    load_kws(directory, size=4, seed=3, recipe=TINY)
    return directory


@needs_espeak
def test_tiny_set_shapes_labels_and_sidecar(tiny_dir: Path) -> None:
    (train_x, train_y), (test_x, test_y) = load_kws(tiny_dir, size=4, seed=3, recipe=TINY)
    # Train: 4 sessions x (yes, no, unknown) + 4 silence; test: 1 session + 1 silence.
    assert train_x.shape == (16, 1, 49, 10) and test_x.shape == (4, 1, 49, 10)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert train_y.tolist() == [0, 1, 2] * 4 + [3] * 4
    assert test_y.tolist() == [0, 1, 2, 3]
    assert torch.isfinite(train_x).all() and torch.isfinite(test_x).all()
    key = kws_cache_key(TINY, 3, 4, espeak_version(), ["f3", "m3"])
    assert sorted(p.name for p in tiny_dir.iterdir()) == [f"kws-{key}.json", f"kws-{key}.pt"]
    sidecar = json.loads((tiny_dir / f"kws-{key}.json").read_text())
    assert sidecar["classes"] == ["yes", "no", "unknown", "silence"]
    assert sidecar["samples"] == {"train": 16, "test": 4}
    assert sidecar["espeak"] == espeak_version() and sidecar["seed"] == 3


@needs_espeak
def test_train_and_test_voices_are_disjoint(tiny_dir: Path) -> None:
    sidecar = json.loads(next(tiny_dir.glob("*.json")).read_text())
    voices = sidecar["voices"]
    assert (voices["train"], voices["test"]) == split_voices(["f3", "m3"], 0.5, 3)
    assert len(voices["train"]) == len(voices["test"]) == 1
    assert not set(voices["train"]) & set(voices["test"])
    for split in ("train", "test"):
        used = {session[1] for session in sidecar["sessions"][split]}
        assert used == set(voices[split])
    assert len(sidecar["sessions"]["train"]) == 4 and len(sidecar["sessions"]["test"]) == 1


@needs_espeak
def test_same_seed_gives_identical_tensors_and_calls(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = EspeakRecorder(monkeypatch)
    first = load_kws(tmp_path, size=4, seed=3, recipe=TINY)
    cached = load_kws(tiny_dir, size=4, seed=3, recipe=TINY)
    for ours, theirs in zip(first, cached):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    # Every session of the sidecar was spoken once with its own voice, speed and pitch.
    sidecar = json.loads(next(tiny_dir.glob("*.json")).read_text())
    expected = sorted(
        (f"{accent}+{voice}", str(speed), str(pitch), " ".join(words))
        for split in ("train", "test")
        for accent, voice, speed, pitch, words in sidecar["sessions"][split]
    )
    spoken = sorted(
        (
            call[call.index("-v") + 1],
            call[call.index("-s") + 1],
            call[call.index("-p") + 1],
            " ".join(call[-1].split(' <break time="1500ms"/> ')),
        )
        for call in recorder.syntheses()
    )
    assert spoken == expected
    other = load_kws(tmp_path, size=4, seed=4, recipe=TINY)
    assert not torch.equal(other[0][0], first[0][0])


@needs_espeak
def test_cache_hit_does_not_synthesize(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = EspeakRecorder(monkeypatch)
    (train_x, _), _ = load_kws(tiny_dir, size=4, seed=3, recipe=TINY)
    assert recorder.syntheses() == []
    # Only the version is read: the key depends on it (voices are given by the recipe).
    assert recorder.calls == [["--version"]]
    assert train_x.shape == (16, 1, 49, 10)


@needs_espeak
def test_damaged_cache_raises_value_error(tiny_dir: Path, tmp_path: Path) -> None:
    for path in tiny_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    cache = next(tmp_path.glob("*.pt"))
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{cache.name}: damaged kws cache.*delete it"):
        load_kws(tmp_path, size=4, seed=3, recipe=TINY)


@needs_espeak
def test_installed_variants_and_unknown_voices(tmp_path: Path) -> None:
    variants = espeak_variants()
    assert {"f3", "m3", "klatt"} <= set(variants) and list(variants) == sorted(variants)
    assert all(" " not in v for v in variants)
    bad = KwsRecipe(keywords=("yes",), unknown_words=("cat",), voices=("f3", "nosuchvoice"))
    with pytest.raises(ValueError, match=r"variant\(s\) \['nosuchvoice'\] are not installed"):
        load_kws(tmp_path, size=1, seed=0, recipe=bad)
    bad = KwsRecipe(
        keywords=("yes",), unknown_words=("cat",), accents=("xx-nope",), voices=TINY.voices
    )
    with pytest.raises(ValueError, match=r"espeak-ng -m -v xx-nope\+.*failed \(exit 1\)"):
        load_kws(tmp_path, size=1, seed=0, recipe=bad)
    assert list(tmp_path.iterdir()) == []


def test_split_voices_is_a_seeded_permutation() -> None:
    voices = [f"v{i}" for i in range(10)]
    train, test = split_voices(reversed(voices), 0.2, seed=5)
    permutation = np.random.default_rng(5).permutation(10)
    assert test == sorted(voices[i] for i in permutation[:2])
    assert train == sorted(set(voices) - set(test))
    assert split_voices(["a", "b"], 0.9, seed=0)[0] != []  # both splits keep a voice
    with pytest.raises(ValueError, match="at least 2 voices"):
        split_voices(["a"], 0.5, seed=0)


def test_missing_espeak_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kws_module.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="Debian package 'espeak-ng'.*apt-get install"):
        load_kws(tmp_path, size=1, recipe=TINY)
    assert list(tmp_path.iterdir()) == []


def test_recipe_validation_and_registry_entry() -> None:
    with pytest.raises(ValueError, match="distinct"):
        KwsRecipe(keywords=("yes", "yes"))
    with pytest.raises(ValueError, match="pitch_range"):
        KwsRecipe(pitch_range=(10, 120))
    with pytest.raises(ValueError, match="at least 2 distinct voices"):
        KwsRecipe(voices=("f3",))
    with pytest.raises(ValueError, match="plain tokens"):
        KwsRecipe(accents=("en-us; rm",))
    assert KwsRecipe().classes[-2:] == ("unknown", "silence") and len(KwsRecipe().classes) == 12
    info = dataset_info("kws")
    assert info.input_shape == (1, 49, 10) and info.num_classes == 12
    key = kws_cache_key(TINY, 0, 4, "v1", ["m3", "f3"])
    assert len(key) == 16 and key == kws_cache_key(TINY, 0, 4, "v1", ["f3", "m3"])
    assert key != kws_cache_key(TINY, 1, 4, "v1", ["f3", "m3"])
    assert key != kws_cache_key(TINY, 0, 4, "v2", ["f3", "m3"])
