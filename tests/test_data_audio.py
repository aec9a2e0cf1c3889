# SPDX-License-Identifier: Apache-2.0
# Audio features and resampling against numpy loops; Speech Commands v2 on a fake archive tree.
from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import zerobit.data.speech_commands as speech_commands_module
from zerobit.data import (
    SPEECH_COMMANDS_CLASSES,
    dct_matrix,
    fit_length,
    load_dataset,
    load_speech_commands,
    log_mel,
    mel_filterbank,
    mfcc,
    read_wav,
    resample,
)

# --- independent references, written from the formulas with numpy and Python loops ---


def reference_filterbank(
    n_fft: int, n_mels: int, rate: float, f_min: float, f_max: float
) -> np.ndarray:
    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    low, high = mel(f_min), mel(f_max)
    edges = [low + (high - low) * i / (n_mels + 1) for i in range(n_mels + 2)]
    bank = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(n_fft // 2 + 1):
        m = mel(k * rate / n_fft)
        for band in range(n_mels):
            left, center, right = edges[band : band + 3]
            if left < m <= center:
                bank[k, band] = (m - left) / (center - left)
            elif center < m < right:
                bank[k, band] = (right - m) / (right - center)
    return bank


def reference_mfcc(
    x: np.ndarray, n_mfcc: int = 10, n_mels: int = 40, center: bool = False
) -> np.ndarray:
    """MFCC per the MLPerf Tiny recipe: direct DFT per frame, explicit cosine-sum DCT."""
    n_fft, win, hop, rate = 512, 480, 320, 16000
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)])
    if center:
        x = np.pad(x, n_fft // 2, mode="reflect")
        starts = [t * hop + (n_fft - win) // 2 for t in range(1 + (len(x) - n_fft) // hop)]
    else:
        starts = [t * hop for t in range(1 + (len(x) - win) // hop)]
    bank = reference_filterbank(n_fft, n_mels, rate, 20.0, 4000.0)
    n = np.arange(win)
    out = np.zeros((len(starts), n_mfcc))
    for t, start in enumerate(starts):
        frame = x[start : start + win] * window  # zero padding to n_fft adds nothing to the sum
        spectrum = np.array(
            [
                abs(np.sum(frame * np.exp(-2j * np.pi * k * n / n_fft)))
                for k in range(n_fft // 2 + 1)
            ]
        )
        log_mels = np.log(spectrum @ bank + 1e-6)
        for k in range(n_mfcc):
            out[t, k] = math.sqrt(2.0 / n_mels) * sum(
                log_mels[i] * math.cos(math.pi * k * (i + 0.5) / n_mels) for i in range(n_mels)
            )
    return out


def reference_resample(x: np.ndarray, orig: int, new: int, zeros: int = 6) -> np.ndarray:
    c = 0.99 * min(orig, new) / orig
    out = np.zeros(math.ceil(len(x) * new / orig))
    for m in range(len(out)):
        t = m * orig / new
        for k in range(len(x)):
            u = c * (t - k)
            if abs(u) <= zeros:
                sinc = 1.0 if u == 0 else math.sin(math.pi * u) / (math.pi * u)
                out[m] += x[k] * c * sinc * math.cos(math.pi * u / (2 * zeros)) ** 2
    return out


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.asarray(samples, dtype="<i2").tobytes())


# --- features ---


@pytest.mark.parametrize(
    ("n_fft", "n_mels", "rate", "f_min", "f_max"),
    [(512, 40, 16000, 20.0, 4000.0), (256, 13, 8000, 0.0, 4000.0), (1024, 64, 22050, 50.0, 9000.0)],
)
def test_mel_filterbank_matches_loop_reference(
    n_fft: int, n_mels: int, rate: int, f_min: float, f_max: float
) -> None:
    bank = mel_filterbank(n_fft, n_mels, rate, f_min, f_max)
    assert bank.dtype == torch.float32 and bank.shape == (n_fft // 2 + 1, n_mels)
    expected = reference_filterbank(n_fft, n_mels, rate, f_min, f_max)
    np.testing.assert_allclose(bank.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Nothing leaks outside [f_min, f_max]; every band peaks below 1 (no bin on the apex).
    frequencies = np.arange(n_fft // 2 + 1) * rate / n_fft
    outside = (frequencies <= f_min) | (frequencies >= f_max)
    assert bank.numpy()[outside].max() == 0.0
    assert 0.0 < bank.max().item() <= 1.0


def test_mel_filterbank_hand_computed_edges() -> None:
    # HTK mel(20 Hz) = 1127 ln(1 + 20/700) = 31.7479, mel(4000 Hz) = 2146.0645; 42 edges,
    # 51.5687 mel apart, so band 0 peaks at mel 83.3166 = 700 (e^(83.3166/1127) - 1) = 53.71 Hz.
    bank = mel_filterbank(512, 40, 16000, 20.0, 4000.0).numpy()
    step = (2146.0645 - 31.7479) / 41
    first_center_hz = 700 * (math.exp((31.7479 + step) / 1127) - 1)
    assert first_center_hz == pytest.approx(53.71, abs=0.01)
    # Bin 1 (31.25 Hz) on the rising edge of band 0: (mel(31.25) - mel(20)) / step.
    rising = (1127 * math.log(1 + 31.25 / 700) - 31.7479) / step
    assert bank[1, 0] == pytest.approx(rising, rel=1e-4)
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(512, 40, 16000, 20.0, 9000.0)


def test_dct_matrix_is_cosine_sum_with_htk_scaling() -> None:
    matrix = dct_matrix(40, 40).double().numpy()
    # Columns k >= 1 are orthonormal, column 0 has squared norm 2 (not divided by sqrt 2).
    np.testing.assert_allclose(matrix.T @ matrix, np.diag([2.0] + [1.0] * 39), atol=1e-6)
    assert matrix[3, 2] == pytest.approx(math.sqrt(2 / 40) * math.cos(math.pi * 2 * 3.5 / 40))


@pytest.mark.parametrize("center", [False, True])
def test_mfcc_matches_direct_dft_reference(center: bool) -> None:
    rng = np.random.default_rng(0)
    # Speech-like: a few tones plus noise, one second at 16 kHz.
    t = np.arange(16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1750 * t)
    x = (x + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    ours = mfcc(torch.from_numpy(x), center=center)
    expected = reference_mfcc(x.astype(np.float64), center=center)
    assert ours.shape == ((51, 10) if center else (49, 10)) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mfcc_shapes_and_batching() -> None:
    waveforms = torch.randn(2, 3, 16000)
    features = mfcc(waveforms)
    assert features.shape == (2, 3, 49, 10)
    torch.testing.assert_close(features[1, 2], mfcc(waveforms[1, 2]), rtol=1e-5, atol=1e-5)
    # 1 + (8000 - 480) // 320 = 24 frames; 480 samples give exactly one.
    assert mfcc(torch.randn(8000)).shape == (24, 10)
    assert log_mel(torch.randn(480)).shape == (1, 40)
    assert mfcc(torch.zeros(0, 16000)).shape == (0, 49, 10)
    with pytest.raises(ValueError, match="fewer than win_length"):
        mfcc(torch.randn(479))


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 2500.0])
def test_pure_tone_lands_in_nearest_mel_band(frequency: float) -> None:
    t = torch.arange(16000, dtype=torch.float64) / 16000
    mels = log_mel(torch.sin(2 * math.pi * frequency * t).float())
    low, high = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 4000 / 700)
    centers = [700 * (math.exp((low + (high - low) * (b + 1) / 41) / 1127) - 1) for b in range(40)]
    expected = int(np.argmin([abs(c - frequency) for c in centers]))
    assert (mels.argmax(dim=1) == expected).all()


def test_resample_matches_loop_reference() -> None:
    x = np.random.default_rng(1).standard_normal(300)
    ours = resample(torch.from_numpy(x), 22050, 16000)
    expected = reference_resample(x, 441, 320)
    assert ours.shape == (math.ceil(300 * 320 / 441),) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-9, atol=1e-12)
    up = resample(torch.from_numpy(x[:50]), 8000, 12000)
    np.testing.assert_allclose(up.numpy(), reference_resample(x[:50], 2, 3), atol=1e-12)


def test_resample_keeps_a_tone_and_removes_what_is_above_nyquist() -> None:
    t = torch.arange(22050, dtype=torch.float64) / 22050
    out = resample(torch.sin(2 * math.pi * 1000 * t), 22050, 16000)
    expected = torch.sin(2 * math.pi * 1000 * torch.arange(16000, dtype=torch.float64) / 16000)
    assert (out - expected)[200:-200].abs().max() < 2e-3
    # 10 kHz is above the new Nyquist frequency (8 kHz): attenuated by more than 40 dB.
    assert resample(torch.sin(2 * math.pi * 10000 * t), 22050, 16000)[200:-200].abs().max() < 1e-2


def test_read_wav_and_fit_length(tmp_path: Path) -> None:
    values = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    write_wav(tmp_path / "a.wav", values, rate=8000)
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, values / np.float32(32768))
    assert fit_length(samples, 8).tolist() == (values / 32768).tolist() + [0.0, 0.0]
    assert fit_length(samples, 2).tolist() == [0.0, 1 / 32768]


def test_read_wav_rejects_corrupt_files(tmp_path: Path) -> None:
    write_wav(tmp_path / "good.wav", np.arange(100, dtype=np.int16))
    raw = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[:-11])
    with pytest.raises(ValueError, match=r"cut\.wav: truncated WAV data.*100 samples"):
        read_wav(tmp_path / "cut.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wave file at all")
    with pytest.raises(ValueError, match=r"junk\.wav: not a readable PCM WAV"):
        read_wav(tmp_path / "junk.wav")
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(bytes(8))
    with pytest.raises(ValueError, match=r"stereo\.wav: expected 16-bit PCM mono, got 2"):
        read_wav(tmp_path / "stereo.wav")
    with pytest.raises(FileNotFoundError, match="absent.wav"):
        read_wav(tmp_path / "absent.wav")


# --- Speech Commands on a fake tree in the real format ---

# word -> clip names; lengths vary so that padding is exercised.
TREE = {
    "yes": [f"s{i}_nohash_0.wav" for i in range(12)],
    "no": [f"s{i}_nohash_0.wav" for i in range(10)],
    "stop": ["s0_nohash_0.wav", "s1_nohash_1.wav"],
    "cat": ["s0_nohash_0.wav", "s5_nohash_0.wav"],
    "marvin": ["s2_nohash_0.wav"],
}
VALIDATION = ["no/s3_nohash_0.wav", "cat/s5_nohash_0.wav"]
TESTING = ["yes/s10_nohash_0.wav", "yes/s11_nohash_0.wav", "marvin/s2_nohash_0.wav"]
NOISE_SECONDS = {"running_tap.wav": 12, "white_noise.wav": 5}


def make_speech_tree(root: Path) -> dict[str, np.ndarray]:
    """Write the fake archive; returns every clip's int16 samples by relative path."""
    rng = np.random.default_rng(2)
    clips = {}
    for word, names in TREE.items():
        for i, name in enumerate(names):
            samples = rng.integers(-3000, 3000, size=4000 + 1100 * i, dtype=np.int16)
            write_wav(root / word / name, samples)
            clips[f"{word}/{name}"] = samples
    for name, seconds in NOISE_SECONDS.items():
        samples = rng.integers(-8000, 8000, size=16000 * seconds, dtype=np.int16)
        write_wav(root / "_background_noise_" / name, samples)
        clips[f"_background_noise_/{name}"] = samples
    (root / "_background_noise_" / "README.md").write_text("noise\n")
    (root / "validation_list.txt").write_text("\n".join(VALIDATION) + "\n")
    (root / "testing_list.txt").write_text("\n".join(TESTING) + "\n")
    return clips


def expected_silence(clips: dict[str, np.ndarray], split_index: int, count: int) -> np.ndarray:
    """The module docstring's silence rule, re-implemented."""
    low, high = [(0.0, 0.8), (0.8, 0.9), (0.9, 1.0)][split_index]
    parts = []
    for name in sorted(NOISE_SECONDS):
        samples = clips[f"_background_noise_/{name}"].astype(np.float32) / np.float32(32768)
        start, stop = int(low * len(samples)), int(high * len(samples))
        if stop - start >= 16000:
            parts.append(samples[start:stop])
    rng = np.random.default_rng((0, split_index))
    out = []
    for _ in range(count):
        part = parts[rng.integers(len(parts))]
        start = int(rng.integers(len(part) - 16000 + 1))
        out.append(np.float32(rng.uniform(0.0, 1.0)) * part[start : start + 16000])
    return np.stack(out) if out else np.zeros((0, 16000), dtype=np.float32)


def label_of(relative: str) -> int:
    word = relative.split("/")[0]
    return SPEECH_COMMANDS_CLASSES.index(word) if word in SPEECH_COMMANDS_CLASSES else 10


@pytest.mark.parametrize(("split", "split_index"), [("train", 0), ("validation", 1), ("test", 2)])
def test_speech_commands_splits_labels_and_features(
    tmp_path: Path, split: str, split_index: int
) -> None:
    clips = make_speech_tree(tmp_path)
    words = sorted(k for k in clips if not k.startswith("_"))
    members = {
        "train": [w for w in words if w not in VALIDATION + TESTING],
        "validation": sorted(VALIDATION),
        "test": sorted(TESTING),
    }[split]
    features, labels = load_speech_commands(tmp_path, split)
    keyword_clips = sum(label_of(m) < 10 for m in members)
    num_silence = round(keyword_clips / 10)
    assert features.shape == (len(members) + num_silence, 1, 49, 10)
    assert features.dtype == torch.float32 and labels.dtype == torch.int64
    assert labels.tolist() == [label_of(m) for m in members] + [11] * num_silence
    waveforms = torch.stack(
        [fit_length(clips[m].astype(np.float32) / np.float32(32768), 16000) for m in members]
    )
    silence = torch.from_numpy(expected_silence(clips, split_index, num_silence))
    expected = mfcc(torch.cat([waveforms, silence.reshape(-1, 16000)])).unsqueeze(1)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_speech_commands_counts_and_registry(tmp_path: Path) -> None:
    make_speech_tree(tmp_path)
    # Train: yes 10 + no 9 + stop 2 = 21 keyword clips -> round(2.1) = 2 silence, + cat 1.
    _, labels = load_speech_commands(tmp_path, "train")
    assert torch.bincount(labels, minlength=12).tolist() == [10, 9, 0, 0, 0, 0, 0, 0, 2, 0, 1, 2]
    splits = load_dataset("speech-commands", data_dir=tmp_path, val_fraction=0.25, seed=1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 3)
    assert splits.info.input_shape == (1, 49, 10) and splits.info.num_classes == 12
    # Test: yes 2 -> round(0.2) = 0 silence clips.
    assert splits.test.tensors[1].tolist() == [10, 0, 0]


def test_speech_commands_corrupt_wav_names_the_file(tmp_path: Path) -> None:
    make_speech_tree(tmp_path)
    clip = tmp_path / "no" / "s4_nohash_0.wav"
    clip.write_bytes(clip.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"no/s4_nohash_0\.wav: truncated WAV data"):
        load_speech_commands(tmp_path, "train")
    write_wav(tmp_path / "yes" / "s10_nohash_0.wav", np.zeros(100, np.int16), rate=8000)
    with pytest.raises(ValueError, match=r"s10_nohash_0\.wav: sample rate 8000 Hz"):
        load_speech_commands(tmp_path, "test")


def test_speech_commands_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech_commands_module, "SPEECH_COMMANDS_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="speech_commands_v0.02.tar.gz.*data_dir"):
        load_speech_commands()
    make_speech_tree(tmp_path)
    (tmp_path / "yes" / "s11_nohash_0.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 clip\(s\) named in .*testing_list\.txt"):
        load_speech_commands(tmp_path, "test")
    (tmp_path / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        load_speech_commands(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_speech_commands(tmp_path, "dev")
