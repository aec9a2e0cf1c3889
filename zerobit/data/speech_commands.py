# SPDX-License-Identifier: Apache-2.0
# Google Speech Commands v2 (12 classes) from the extracted archive, as 49x10 MFCC features.
"""Google Speech Commands v2, the 12-class keyword-spotting task of spec §5.4.

The extracted archive (``speech_commands_v0.02.tar.gz``) is one folder per word of 16-bit PCM
mono 16 kHz WAV files, a ``_background_noise_`` folder of long noise recordings, and the files
``validation_list.txt`` / ``testing_list.txt`` naming the clips (``word/file.wav``) of those splits;
every other clip is a training clip.

Classes (``SPEECH_COMMANDS_CLASSES``): the ten keywords, then ``"unknown"`` (every other word
folder, all of its clips: the class is large, as in the MLPerf Tiny reference) and ``"silence"``.

Silence clips are cut from the ``_background_noise_`` recordings. Each recording is divided by
position into a training part (its first 80 % of samples), a validation part (the next 10 %) and a
test part (the last 10 %), so the splits never share noise. A split gets as many silence clips as
it has clips per keyword on average (``round(keyword clips / 10)``), drawn with
``rng = numpy.random.default_rng((SILENCE_SEED, split_index))`` (split_index 0 train, 1
validation, 2 test); for each clip, in order: ``file = rng.integers(len(files))`` (recordings
sorted by name, those whose part is shorter than 1 s left out), ``start = part_start +
rng.integers(part_length - 16000 + 1)``, ``gain = rng.uniform(0, 1)``; the clip is ``gain *
recording[start:start + 16000]``.

Every clip is zero-padded at the end (or trimmed) to 16,000 samples and turned into MFCCs by
:func:`zerobit.data.audio.mfcc` with its defaults (49 frames x 10 coefficients).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zerobit.data.audio import fit_length, mfcc, read_wav
from zerobit.data.datasets import Arrays, DatasetInfo, register_dataset

SPEECH_COMMANDS_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_COMMANDS_CLASSES = (*SPEECH_COMMANDS_KEYWORDS, "unknown", "silence")
UNKNOWN_LABEL = SPEECH_COMMANDS_CLASSES.index("unknown")
SILENCE_LABEL = SPEECH_COMMANDS_CLASSES.index("silence")
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE
SILENCE_SEED = 0
SPEECH_COMMANDS_DIR = Path("~/.cache/zerobit/speech_commands").expanduser()
SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
BACKGROUND_NOISE_DIR = "_background_noise_"
SPLITS = ("train", "validation", "test")
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
# Fraction of each noise recording, by position, that feeds the silence clips of each split.
NOISE_PARTS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
# Clips featurized at once: bounds the memory of the waveform batch (float32, 64 KB per clip).
_BATCH = 2048

SPEECH_COMMANDS_INFO = DatasetInfo(
    name="speech-commands",
    input_shape=(1, 49, 10),
    num_classes=12,
    preprocessing=(
        "Google Speech Commands v2: classes yes, no, up, down, left, right, on, off, stop, go, "
        "unknown (all other words), silence (1 s crops of _background_noise_ at gain U(0, 1)); "
        "official testing_list.txt is the test set, the train set is every clip in neither list; "
        "16-bit PCM / 32768, zero-padded to 16,000 samples; MFCC: periodic Hann 480, hop 320, "
        "FFT 512, no centering, |STFT|, 40 HTK mels 20-4000 Hz, log(x + 1e-6), DCT-II "
        "sqrt(2/40), 10 coefficients -> (1, 49, 10); no normalization"
    ),
)


def _missing(directory: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Speech Commands {what} not found in {directory}. Download {SPEECH_COMMANDS_URL}, "
        f"extract it (tar xzf) into a folder and pass data_dir= pointing at it (default "
        f"{SPEECH_COMMANDS_DIR}); the folder must hold one subfolder per word, "
        f"{BACKGROUND_NOISE_DIR}/, {LIST_FILES['validation']} and {LIST_FILES['test']}."
    )


def _read_list(directory: Path, split: str) -> list[str]:
    path = directory / LIST_FILES[split]
    if not path.is_file():
        raise _missing(directory, LIST_FILES[split])
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _directory(data_dir: str | os.PathLike[str] | None, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    directory = SPEECH_COMMANDS_DIR if data_dir is None else Path(data_dir)
    if not directory.is_dir():
        raise _missing(directory, "folder")
    return directory


def _word_label(word: str, keywords: Sequence[str]) -> int:
    return keywords.index(word) if word in keywords else UNKNOWN_LABEL


def speech_commands_clips(
    data_dir: str | os.PathLike[str] | None = None, split: str = "train"
) -> tuple[list[Path], torch.Tensor]:
    """List the word clips of one split and their labels (silence not included).

    Args:
        data_dir: The extracted archive (None: ``SPEECH_COMMANDS_DIR``).
        split: ``"train"``, ``"validation"`` or ``"test"``.

    Returns:
        ``(paths, labels)``: the WAV files sorted by relative path, labels int64 (N,) indexing
        ``SPEECH_COMMANDS_CLASSES``.

    Raises:
        ValueError: If ``split`` is unknown.
        FileNotFoundError: If the folder, a list file, or a listed clip is missing.
    """
    directory = _directory(data_dir, split)
    listed = {name: _read_list(directory, name) for name in LIST_FILES}
    if split == "train":
        held_out = {entry for entries in listed.values() for entry in entries}
        words = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name[0] not in "_.")
        relative = [
            f"{word}/{wav.name}"
            for word in words
            for wav in (directory / word).glob("*.wav")
            if f"{word}/{wav.name}" not in held_out
        ]
    else:
        relative = listed[split]
        absent = [entry for entry in relative if not (directory / entry).is_file()]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} clip(s) named in {directory / LIST_FILES[split]} are missing, "
                f"e.g. {directory / absent[0]}; re-extract the archive"
            )
    relative = sorted(relative)
    labels = [_word_label(entry.split("/")[0], SPEECH_COMMANDS_KEYWORDS) for entry in relative]
    return [directory / entry for entry in relative], torch.tensor(labels, dtype=torch.int64)


def _read_clip(path: Path) -> np.ndarray:
    samples, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    return samples


def silence_clips(directory: Path, split: str, count: int) -> torch.Tensor:
    """Cut the silence clips of one split from the background-noise recordings (module doc).

    Args:
        directory: The extracted archive.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        count: Number of clips.

    Returns:
        Waveforms float32 (count, 16000).

    Raises:
        FileNotFoundError: If ``_background_noise_`` holds no WAV file.
        ValueError: If no recording has a part of at least 1 s for ``split``.
    """
    noise_dir = directory / BACKGROUND_NOISE_DIR
    paths = sorted(noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
    if not paths:
        raise _missing(directory, f"{BACKGROUND_NOISE_DIR}/*.wav")
    low, high = NOISE_PARTS[split]
    parts = []
    for path in paths:
        samples = _read_clip(path)
        start, stop = int(low * len(samples)), int(high * len(samples))
        if stop - start >= CLIP_SAMPLES:
            parts.append(samples[start:stop])
    if not parts:
        raise ValueError(
            f"no recording in {noise_dir} has a {split} part of at least 1 s (the part is "
            f"{low:.0%}-{high:.0%} of each file)"
        )
    rng = np.random.default_rng((SILENCE_SEED, SPLITS.index(split)))
    clips = np.empty((count, CLIP_SAMPLES), dtype=np.float32)
    for i in range(count):
        part = parts[rng.integers(len(parts))]
        start = int(rng.integers(len(part) - CLIP_SAMPLES + 1))
        clips[i] = np.float32(rng.uniform(0.0, 1.0)) * part[start : start + CLIP_SAMPLES]
    return torch.from_numpy(clips)


def _features(waveforms: torch.Tensor) -> torch.Tensor:
    """MFCCs float32 (N, 1, 49, 10) of waveforms float32 (N, 16000), in bounded batches."""
    chunks = [waveforms.new_zeros((0, 49, 10))]
    chunks += [mfcc(batch) for batch in waveforms.split(_BATCH)]
    return torch.cat(chunks).unsqueeze(1)


def load_speech_commands(
    data_dir: str | os.PathLike[str] | None = None, split: str = "train"
) -> Arrays:
    """Load one split of Speech Commands v2 as MFCC features (module docstring).

    Args:
        data_dir: The extracted archive (None: ``~/.cache/zerobit/speech_commands``).
        split: ``"train"`` (clips in neither list), ``"validation"`` or ``"test"`` (the clips of
            ``validation_list.txt`` / ``testing_list.txt``).

    Returns:
        ``(features, labels)``: features float32 (N, 1, 49, 10), the word clips sorted by
        relative path followed by the silence clips; labels int64 (N,) indexing
        ``SPEECH_COMMANDS_CLASSES``.

    Raises:
        ValueError: On an unknown split or a WAV file that is corrupt, truncated, not 16-bit
            mono, or not 16 kHz (the message names the file).
        FileNotFoundError: If the folder, a list, a listed clip or the noise recordings are
            missing; the message says where to download the archive.
    """
    directory = _directory(data_dir, split)
    paths, labels = speech_commands_clips(directory, split)
    keyword_clips = int((labels < UNKNOWN_LABEL).sum())
    silence = silence_clips(directory, split, round(keyword_clips / len(SPEECH_COMMANDS_KEYWORDS)))
    chunks = []
    for start in range(0, len(paths), _BATCH):
        batch = [fit_length(_read_clip(p), CLIP_SAMPLES) for p in paths[start : start + _BATCH]]
        chunks.append(_features(torch.stack(batch)))
    chunks.append(_features(silence))
    silence_labels = torch.full((len(silence),), SILENCE_LABEL, dtype=torch.int64)
    return torch.cat(chunks), torch.cat([labels, silence_labels])


@register_dataset(SPEECH_COMMANDS_INFO)
def _load_speech_commands_splits(
    data_dir: str | os.PathLike[str] | None,
) -> tuple[Arrays, Arrays]:
    return load_speech_commands(data_dir, "train"), load_speech_commands(data_dir, "test")
