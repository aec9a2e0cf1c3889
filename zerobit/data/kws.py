# SPDX-License-Identifier: Apache-2.0
# A synthetic keyword-spotting set spoken by espeak-ng, mixed with noise, cached as MFCCs.
"""Synthetic keyword spotting: Speech Commands' 12 classes spoken by espeak-ng.

A stand-in for Google Speech Commands that needs no download, only the Debian package
``espeak-ng``. Recipe (``KwsRecipe`` holds the knobs, ``seed`` and ``size`` the rest):

1. **Voices.** An espeak-ng voice is ``<accent>+<variant>``: the accent (``KwsRecipe.accents``)
   sets the pronunciation rules, the variant (``KwsRecipe.voices``; default every variant that
   ``espeak-ng --voices=variant`` lists) the speaker: formants, pitch contour, breathiness. The
   variants are split by ``numpy.random.default_rng(seed).permutation`` of their sorted names:
   the first ``max(1, round(n * test_voice_fraction))`` (at most n - 1) speak only the test set,
   the others only the training set. So no test speaker is heard in training.
2. **Sessions.** Each split has ``size`` (train) or ``max(1, size // 4)`` (test) sessions. A
   session draws, from ``default_rng((seed, split))`` (split 0 train, 1 test) in this order, an
   accent, a variant of its split, a speed in ``speed_range`` words per minute, a pitch in
   ``pitch_range`` (espeak-ng's 0-99) and one word of ``unknown_words``; one espeak-ng call then
   says every keyword and that word, separated by 1.5 s pauses (SSML ``<break>``).
3. **Cutting.** The output (22,050 Hz) is resampled to 16 kHz with
   :func:`zerobit.data.audio.resample` (Hann-windowed sinc) and cut at its ``n_words - 1``
   longest quiet stretches (each must last at least 0.4 s); each word is trimmed to its first
   and last 10 ms frame whose peak exceeds 2 % of the session's peak and, if longer than 1 s,
   cut to its first second (variants with echo ring on).
4. **Mixing.** For each clip, from ``default_rng((seed, split, 1))``: a start offset uniform over
   the positions that keep the word inside 1 s, an SNR uniform in ``snr_db_range``, a noise
   colour ``beta`` uniform in [0, 2] (power spectrum ~ 1 / f**beta above 20 Hz: white to brown),
   a level uniform in [-20, 0] dB, then the noise's Gaussian samples. The word is scaled to an
   RMS of ``0.1 * level``, noise of RMS ``0.1 * level / 10**(snr / 20)`` is added over the whole
   second, and the sum is clipped to [-1, 1]. Silence clips (``size`` per split, resp.
   ``size // 4``) are the same noise with no word.
5. **Features.** :func:`zerobit.data.audio.mfcc` with its defaults: (1, 49, 10) per clip.

Difficulty: clean espeak-ng words are nearly separable, so the noise sets the difficulty. With the
default recipe (SNR 0-20 dB) and size 1000, the float ``DSCNN`` trained 15 epochs (Adam 1e-3,
cosine, batch 100, no augmentation) reached 84.6 % test accuracy on unseen voices (82.3 % with
SNR -5-20 dB), near the 85-95 % of real Speech Commands; longer training adds a little.

Labels: the keywords in order, then ``unknown``, then ``silence`` (for the default recipe,
``SPEECH_COMMANDS_CLASSES``). Samples are ordered session by session (keywords, then the unknown
word), then the silence clips.

The result is cached in ``data_dir`` (default ``~/.cache/zerobit/kws``) as
``kws-<key>.pt`` (a dict of tensors, read with ``weights_only=True``) with a ``kws-<key>.json``
sidecar describing it (recipe, seed, size, espeak-ng version, voice split, sessions). ``key`` is
the first 16 hex digits of the SHA-256 of the canonical JSON of ``RECIPE_VERSION``, the
espeak-ng version line, the seed, the size, the recipe and the resolved variant list; a cache
hit runs espeak-ng only to read its version and (if ``voices`` is None) its variant list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zerobit.data.audio import mfcc, read_wav, resample
from zerobit.data.datasets import Arrays, DatasetInfo, register_dataset
from zerobit.data.speech_commands import SAMPLE_RATE, SPEECH_COMMANDS_KEYWORDS

ESPEAK = "espeak-ng"
ESPEAK_PACKAGE = "espeak-ng"
KWS_DIR = Path("~/.cache/zerobit/kws").expanduser()
# Bump when the generation code changes what a given recipe produces: it invalidates caches.
RECIPE_VERSION = 1
KWS_DEFAULT_SIZE = 1000
# The 25 non-keyword words of Speech Commands v2.
KWS_UNKNOWN_WORDS = (
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "happy",
    "house",
    "learn",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "visual",
    "wow",
    "zero",
)
# espeak-ng's English accents that need no MBROLA voice.
KWS_ACCENTS = (
    "en-us",
    "en-us-nyc",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
SPEECH_RMS = 0.1
LEVEL_DB_RANGE = (-20.0, 0.0)
NOISE_EXPONENT_RANGE = (0.0, 2.0)
# Pause between the words of a session; variants with echo ring for up to ~0.6 s after a word.
_PAUSE_S = 1.5
_MIN_PAUSE_S = 0.4
_LOUD = 0.02  # a frame is part of a word if its peak exceeds this fraction of the session's
_FRAME = SAMPLE_RATE // 100  # 10 ms
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class KwsRecipe:
    """What the synthetic keyword-spotting set says and how it is disturbed (module docstring).

    Attributes:
        keywords: Words with a class each, labels ``0 .. len(keywords) - 1``.
        unknown_words: Words of the ``unknown`` class (label ``len(keywords)``).
        accents: espeak-ng base voices; every one must be installed.
        voices: espeak-ng variant names (``espeak-ng --voices=variant``, file column without
            ``!v/``), at least 2; None for all installed variants.
        test_voice_fraction: Fraction of the variants kept for the test set, in (0, 1).
        speed_range: Inclusive range of speaking rates, words per minute.
        pitch_range: Inclusive range of espeak-ng pitch, 0 .. 99.
        snr_db_range: Range of the speech-to-noise ratio in dB.
    """

    keywords: tuple[str, ...] = SPEECH_COMMANDS_KEYWORDS
    unknown_words: tuple[str, ...] = KWS_UNKNOWN_WORDS
    accents: tuple[str, ...] = KWS_ACCENTS
    voices: tuple[str, ...] | None = None
    test_voice_fraction: float = 0.2
    speed_range: tuple[int, int] = (110, 210)
    pitch_range: tuple[int, int] = (20, 80)
    snr_db_range: tuple[float, float] = (0.0, 20.0)

    def __post_init__(self) -> None:
        words = (*self.keywords, *self.unknown_words)
        if not self.keywords or not self.unknown_words or not self.accents:
            raise ValueError("KwsRecipe needs at least one keyword, unknown word and accent")
        if len(set(words)) != len(words) or not all(re.fullmatch(r"[a-z']+", w) for w in words):
            raise ValueError(f"words must be distinct lower-case words, got {words}")
        names = (*self.accents, *(self.voices or ()))
        if not all(re.fullmatch(r"[A-Za-z0-9_.-]+", name) for name in names):
            raise ValueError(f"accent and voice names must be plain tokens, got {names}")
        if self.voices is not None and len(set(self.voices)) < 2:
            raise ValueError(f"need at least 2 distinct voices to split, got {self.voices}")
        if not 0 < self.test_voice_fraction < 1:
            raise ValueError(
                f"test_voice_fraction must be in (0, 1), got {self.test_voice_fraction}"
            )
        for name, (low, high), bounds in (
            ("speed_range", self.speed_range, (80, 450)),
            ("pitch_range", self.pitch_range, (0, 99)),
            ("snr_db_range", self.snr_db_range, (-math.inf, math.inf)),
        ):
            if not bounds[0] <= low <= high <= bounds[1]:
                raise ValueError(f"{name} must be low <= high within {bounds}, got {(low, high)}")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order: the keywords, ``"unknown"``, ``"silence"``."""
        return (*self.keywords, "unknown", "silence")


_DEFAULT_RECIPE = KwsRecipe()
KWS_INFO = DatasetInfo(
    name="kws",
    input_shape=(1, 49, 10),
    num_classes=12,
    preprocessing=(
        "synthetic Speech Commands classes (yes, no, up, down, left, right, on, off, stop, go, "
        "unknown, silence) spoken by espeak-ng, train/test voices disjoint, "
        f"{KWS_DEFAULT_SIZE} train and {KWS_DEFAULT_SIZE // 4} test clips per class (seed 0), "
        "random shift in 1 s, coloured noise at SNR "
        f"U{_DEFAULT_RECIPE.snr_db_range} dB; MFCC as speech-commands (Hann 480, hop 320, FFT "
        "512, 40 mels 20-4000 Hz, log, 10 DCT coefficients) -> (1, 49, 10); see zerobit.data.kws"
    ),
)


def _espeak(args: Sequence[str]) -> str:
    binary = shutil.which(ESPEAK)
    if binary is None:
        raise FileNotFoundError(
            f"{ESPEAK} not found on PATH; the synthetic 'kws' dataset needs it: install the "
            f"Debian package {ESPEAK_PACKAGE!r} (apt-get install {ESPEAK_PACKAGE})"
        )
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise ValueError(
            f"{ESPEAK} {' '.join(args)} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def espeak_version() -> str:
    """Return espeak-ng's version line without its data path, e.g. ``"eSpeak NG ...: 1.51"``.

    Raises:
        FileNotFoundError: If espeak-ng is not installed (the message names the Debian package).
    """
    return _espeak(["--version"]).split("Data at:")[0].strip()


def espeak_variants() -> tuple[str, ...]:
    """Return the installed espeak-ng voice variants usable as ``-v <accent>+<variant>``, sorted.

    Variants whose file name holds a space are left out (they cannot be named on the command
    line).

    Raises:
        FileNotFoundError: If espeak-ng is not installed.
    """
    names = re.findall(r"!v/(\S+)(?:\s{2,}|\s*$)", _espeak(["--voices=variant"]), re.MULTILINE)
    return tuple(sorted(set(names)))


def split_voices(voices: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split voice variants into disjoint training and test voices (module docstring, step 1).

    Args:
        voices: Variant names, at least 2.
        fraction: Fraction of the variants for the test set.
        seed: Seed of the permutation.

    Returns:
        ``(train_voices, test_voices)``, each sorted and non-empty.

    Raises:
        ValueError: If fewer than 2 distinct voices are given.
    """
    ordered = sorted(set(voices))
    if len(ordered) < 2:
        raise ValueError(f"need at least 2 voices to split, got {ordered}")
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    num_test = min(len(ordered) - 1, max(1, round(len(ordered) * fraction)))
    test = sorted(ordered[i] for i in permutation[:num_test])
    return sorted(set(ordered) - set(test)), test


def kws_cache_key(
    recipe: KwsRecipe, seed: int, size: int, version: str, voices: Sequence[str]
) -> str:
    """Return the cache key: 16 hex digits of the SHA-256 of the generation's inputs.

    Args:
        recipe: The recipe.
        seed: Generation seed.
        size: Training clips per class.
        version: :func:`espeak_version`.
        voices: The resolved variant list.
    """
    inputs = {
        "recipe_version": RECIPE_VERSION,
        "espeak": version,
        "seed": seed,
        "size": size,
        "recipe": dataclasses.asdict(recipe),
        "voices": sorted(voices),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Session:
    accent: str
    voice: str
    speed: int
    pitch: int
    words: tuple[str, ...]


def _plan_sessions(
    recipe: KwsRecipe, voices: list[str], count: int, seed: int, split: int
) -> list[_Session]:
    rng = np.random.default_rng((seed, split))
    sessions = []
    for _ in range(count):
        accent = recipe.accents[rng.integers(len(recipe.accents))]
        voice = voices[rng.integers(len(voices))]
        speed = int(rng.integers(recipe.speed_range[0], recipe.speed_range[1] + 1))
        pitch = int(rng.integers(recipe.pitch_range[0], recipe.pitch_range[1] + 1))
        unknown = recipe.unknown_words[rng.integers(len(recipe.unknown_words))]
        sessions.append(_Session(accent, voice, speed, pitch, (*recipe.keywords, unknown)))
    return sessions


def _cut_words(samples: np.ndarray, count: int, source: str) -> list[np.ndarray]:
    """Cut a 16 kHz session at its ``count - 1`` longest pauses; trim words to loud frames."""
    frames = len(samples) // _FRAME
    envelope = np.abs(samples[: frames * _FRAME]).reshape(frames, _FRAME).max(axis=1)
    loud = np.flatnonzero(envelope > _LOUD * envelope.max()) if frames else np.array([], int)
    if len(loud) == 0:
        raise ValueError(f"{source}: espeak-ng produced silence")
    gaps = np.diff(loud) - 1  # quiet frames between consecutive loud frames
    cuts = np.sort(np.argsort(-gaps, kind="stable")[: count - 1])
    if len(cuts) < count - 1 or (
        count > 1 and gaps[cuts].min() * _FRAME < _MIN_PAUSE_S * SAMPLE_RATE
    ):
        raise ValueError(
            f"{source}: could not find {count - 1} pauses of at least {_MIN_PAUSE_S} s between "
            "the words"
        )
    starts = np.concatenate([[loud[0]], loud[cuts + 1]])
    stops = np.concatenate([loud[cuts], [loud[-1]]]) + 1
    return [samples[a * _FRAME : b * _FRAME] for a, b in zip(starts, stops)]


def _synthesize(session: _Session, directory: str, index: int) -> list[torch.Tensor]:
    """Speak one session; return its words float32 (n,), 16 kHz, at most 1 s each."""
    path = os.path.join(directory, f"session-{index}.wav")
    text = f' <break time="{int(_PAUSE_S * 1000)}ms"/> '.join(session.words)
    voice = f"{session.accent}+{session.voice}"
    args = ["-m", "-v", voice, "-s", str(session.speed), "-p", str(session.pitch), "-w", path]
    _espeak([*args, text])
    samples, rate = read_wav(path)
    os.remove(path)
    # One resampling call per session: the per-call set-up costs more than a word's filtering.
    resampled = resample(torch.from_numpy(samples), rate, SAMPLE_RATE).numpy()
    words = _cut_words(resampled, len(session.words), f"{ESPEAK} -v {voice}")
    return [torch.from_numpy(word[:SAMPLE_RATE].copy()) for word in words]


def _noise(rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Unit-RMS noise float64 (16000,) with power spectrum ~ 1 / f**exponent above 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(SAMPLE_RATE))
    frequencies = np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)
    spectrum *= np.maximum(frequencies, 20.0) ** (-exponent / 2)
    noise = np.fft.irfft(spectrum, n=SAMPLE_RATE)
    return noise / np.sqrt(np.mean(noise**2))


def _mix(words: list[torch.Tensor], recipe: KwsRecipe, rng: np.random.Generator) -> torch.Tensor:
    """Place each word (an empty one: silence) in 1 s of noise; float32 (len(words), 16000)."""
    clips = np.zeros((len(words), SAMPLE_RATE))
    for clip, word in zip(clips, words):
        samples = word.numpy().astype(np.float64)
        offset = int(rng.integers(SAMPLE_RATE - len(samples) + 1))
        snr_db = rng.uniform(*recipe.snr_db_range)
        exponent = rng.uniform(*NOISE_EXPONENT_RANGE)
        level = SPEECH_RMS * 10 ** (rng.uniform(*LEVEL_DB_RANGE) / 20)
        clip += _noise(rng, exponent) * level / 10 ** (snr_db / 20)
        if len(samples):
            rms = np.sqrt(np.mean(samples**2))
            clip[offset : offset + len(samples)] += samples * (level / max(rms, 1e-12))
    return torch.from_numpy(np.clip(clips, -1.0, 1.0).astype(np.float32))


def _generate_split(
    recipe: KwsRecipe, sessions: list[_Session], silences: int, seed: int, split: int, workers: int
) -> Arrays:
    with (
        tempfile.TemporaryDirectory(prefix="zerobit-kws-") as directory,
        ThreadPoolExecutor(workers) as pool,
    ):
        spoken = list(
            pool.map(_synthesize, sessions, [directory] * len(sessions), range(len(sessions)))
        )
    words = [word for session in spoken for word in session]
    words += [torch.zeros(0)] * silences
    labels = [label for _ in sessions for label in range(len(recipe.keywords) + 1)]
    labels += [len(recipe.keywords) + 1] * silences
    clips = _mix(words, recipe, np.random.default_rng((seed, split, 1)))
    features = torch.cat([clips.new_zeros((0, 49, 10)), *(mfcc(b) for b in clips.split(2048))])
    return features.unsqueeze(1), torch.tensor(labels, dtype=torch.int64)


def _write_atomically(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _read_cache(path: Path) -> tuple[Arrays, Arrays]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        train = (content["train_x"], content["train_y"])
        test = (content["test_x"], content["test_y"])
    except Exception as error:  # any failure means a damaged cache file
        raise ValueError(
            f"{path}: damaged kws cache file ({error}); delete it to regenerate"
        ) from error
    return train, test


def load_kws(
    data_dir: str | os.PathLike[str] | None = None,
    size: int = KWS_DEFAULT_SIZE,
    seed: int = 0,
    recipe: KwsRecipe | None = None,
    workers: int | None = None,
) -> tuple[Arrays, Arrays]:
    """Load the synthetic keyword-spotting set, generating and caching it on first use.

    Args:
        data_dir: Cache folder (None: ``~/.cache/zerobit/kws``); created if missing.
        size: Training clips per class (sessions of the training split); the test split has
            ``max(1, size // 4)`` per class. 1000 gives 12,000 + 3,000 clips.
        seed: Seed of the voice split, the sessions and the mixing.
        recipe: Words, voices and disturbances; None for ``KwsRecipe()``.
        workers: Parallel espeak-ng processes (None: the number of CPUs).

    Returns:
        ``((train_x, train_y), (test_x, test_y))``: MFCCs float32 (N, 1, 49, 10), labels int64
        (N,) indexing ``recipe.classes``. Same inputs (and espeak-ng version) give identical
        tensors.

    Raises:
        FileNotFoundError: If espeak-ng is not installed (the message names the Debian package).
        ValueError: On a bad ``size``, a voice variant or accent that is not installed, an
            espeak-ng failure, or a damaged cache file.
    """
    recipe = KwsRecipe() if recipe is None else recipe
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    version = espeak_version()
    voices = list(recipe.voices) if recipe.voices is not None else list(espeak_variants())
    key = kws_cache_key(recipe, seed, size, version, voices)
    directory = KWS_DIR if data_dir is None else Path(data_dir)
    path = directory / f"kws-{key}.pt"
    if path.is_file():
        return _read_cache(path)
    start = time.perf_counter()
    # espeak-ng silently ignores an unknown variant, so check the names before speaking.
    missing = sorted(set(voices) - set(espeak_variants())) if recipe.voices else []
    if missing:
        raise ValueError(
            f"espeak-ng voice variant(s) {missing} are not installed; the installed ones are "
            "listed by espeak-ng --voices=variant"
        )
    train_voices, test_voices = split_voices(voices, recipe.test_voice_fraction, seed)
    counts = (size, max(1, size // 4))
    plans = [
        _plan_sessions(recipe, split_voices_, count, seed, index)
        for index, (split_voices_, count) in enumerate(zip((train_voices, test_voices), counts))
    ]
    workers = workers or os.cpu_count() or 1
    train, test = (
        _generate_split(recipe, plan, count, seed, index, workers)
        for index, (plan, count) in enumerate(zip(plans, counts))
    )
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"train_x": train[0], "train_y": train[1], "test_x": test[0], "test_y": test[1]}
    _write_atomically(path, lambda target: torch.save(tensors, target))
    sidecar = {
        "key": key,
        "recipe_version": RECIPE_VERSION,
        "espeak": version,
        "seed": seed,
        "size": size,
        "recipe": dataclasses.asdict(recipe),
        "classes": list(recipe.classes),
        "voices": {"train": train_voices, "test": test_voices},
        "samples": {"train": len(train[1]), "test": len(test[1])},
        "sessions": {
            split: [dataclasses.astuple(session) for session in plan]
            for split, plan in zip(_SPLITS, plans)
        },
        "generation_seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(sidecar, indent=1) + "\n"
    _write_atomically(path.with_suffix(".json"), lambda target: target.write_text(text))
    return train, test


@register_dataset(KWS_INFO)
def _load_kws_splits(data_dir: str | os.PathLike[str] | None) -> tuple[Arrays, Arrays]:
    return load_kws(data_dir)
