# SPDX-License-Identifier: Apache-2.0
# Audio features in plain torch (mel filter bank, log-mel, MFCC), resampling and WAV reading.
"""Audio front end of the keyword-spotting datasets (spec §5.4).

The MFCC recipe is the one of the MLPerf Tiny keyword-spotting reference (TensorFlow's
``tf.signal.stft`` + ``linear_to_mel_weight_matrix`` + ``mfccs_from_log_mel_spectrograms``):

1. Frames of ``win_length`` samples every ``hop_length`` samples; frame ``t`` starts at sample
   ``t * hop_length`` (``center=False``) or is centred on it (``center=True``, reflect padding).
   Periodic Hann window, zero-padded to ``n_fft`` samples.
2. Magnitude (not power) of the real FFT, ``n_fft // 2 + 1`` bins.
3. Mel filter bank of :func:`mel_filterbank` (HTK mel scale, triangles in mel with peak 1).
4. ``log(mel + 1e-6)``.
5. DCT-II ``c_k = sqrt(2 / N) * sum_n x_n cos(pi k (n + 1/2) / N)`` over the ``N`` mel bands,
   first ``n_mfcc`` coefficients.

For one second at 16 kHz and the defaults this gives 49 frames x 10 coefficients.
"""

from __future__ import annotations

import functools
import math
import os
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def hz_to_mel(frequency: torch.Tensor | float) -> torch.Tensor:
    """Convert hertz to the HTK mel scale, ``1127 * ln(1 + f / 700)``.

    Args:
        frequency: Frequencies in Hz (a tensor of any shape or a number).

    Returns:
        Mels, float64 with the shape of ``frequency``.
    """
    frequency = torch.as_tensor(frequency, dtype=torch.float64)
    return 1127.0 * torch.log1p(frequency / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    """Invert :func:`hz_to_mel`: ``700 * (exp(m / 1127) - 1)``.

    Args:
        mel: Mels (a tensor of any shape or a number).

    Returns:
        Frequencies in Hz, float64 with the shape of ``mel``.
    """
    mel = torch.as_tensor(mel, dtype=torch.float64)
    return 700.0 * torch.expm1(mel / 1127.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float
) -> torch.Tensor:
    """Triangular mel filter bank on the HTK mel scale (TensorFlow's convention).

    The band edges are ``n_mels + 2`` points equally spaced in mel from ``hz_to_mel(f_min)`` to
    ``hz_to_mel(f_max)``; band ``m`` rises linearly *in mel* from edge ``m`` to a peak of 1 at edge
    ``m + 1`` and falls back to 0 at edge ``m + 2``. FFT bin ``k`` sits at ``k * sample_rate /
    n_fft`` Hz. Normalization: none, every triangle peaks at 1 (no unit-area scaling, unlike
    librosa's ``norm="slaney"``), so wider high-frequency bands sum more energy.

    Args:
        n_fft: FFT size; the bank has ``n_fft // 2 + 1`` rows.
        n_mels: Number of mel bands.
        sample_rate: Sample rate in Hz.
        f_min: Lower edge of the first band in Hz, ``0 <= f_min < f_max``.
        f_max: Upper edge of the last band in Hz, at most ``sample_rate / 2``.

    Returns:
        Weights float32 (n_fft // 2 + 1, n_mels): ``spectrum @ weights`` gives the mel energies.

    Raises:
        ValueError: On non-positive sizes or band edges outside ``[0, sample_rate / 2]``.
    """
    if n_fft < 2 or n_mels < 1 or sample_rate <= 0:
        raise ValueError(
            f"need n_fft >= 2, n_mels >= 1, sample_rate > 0; got {n_fft}, {n_mels}, {sample_rate}"
        )
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got f_min={f_min}, "
            f"f_max={f_max}"
        )
    bin_mels = hz_to_mel(torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft)
    edges = torch.linspace(
        float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels[:, None] - lower) / (center - lower)
    falling = (upper - bin_mels[:, None]) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def _magnitude_frames(
    waveform: torch.Tensor, n_fft: int, win_length: int, hop_length: int, center: bool
) -> torch.Tensor:
    """|STFT| as (batch, frames, n_fft // 2 + 1) of a (batch, time) waveform."""
    if not 0 < win_length <= n_fft or hop_length <= 0:
        raise ValueError(
            f"need 0 < win_length <= n_fft and hop_length > 0, got win_length={win_length}, "
            f"n_fft={n_fft}, hop_length={hop_length}"
        )
    if not center:
        # torch.stft centres the window inside the n_fft frame; padding by the same offset makes
        # frame t start at sample t * hop_length (TensorFlow's framing) and gives
        # 1 + (time - win_length) // hop_length frames.
        if waveform.shape[-1] < win_length:
            raise ValueError(
                f"waveform has {waveform.shape[-1]} samples, fewer than win_length={win_length}"
            )
        left = (n_fft - win_length) // 2
        waveform = F.pad(waveform, (left, n_fft - win_length - left))
    window = torch.hann_window(
        win_length, periodic=True, dtype=waveform.dtype, device=waveform.device
    )
    spectrum = torch.stft(
        waveform,
        n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode="reflect",
        return_complex=True,
    )
    return spectrum.abs().transpose(-1, -2)


def log_mel(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    n_mels: int = 40,
    n_fft: int = 512,
    win_length: int = 480,
    hop_length: int = 320,
    f_min: float = 20.0,
    f_max: float = 4000.0,
    center: bool = False,
) -> torch.Tensor:
    """Log-mel spectrogram, steps 1-4 of the module recipe.

    Args:
        waveform: Samples float32 (..., time), nominally in [-1, 1].
        sample_rate: Sample rate of ``waveform`` in Hz.
        n_mels: Number of mel bands.
        n_fft: FFT size (frames are zero-padded from ``win_length`` to it).
        win_length: Hann window length in samples.
        hop_length: Distance between frame starts in samples.
        f_min: Lower edge of the mel bank in Hz.
        f_max: Upper edge of the mel bank in Hz.
        center: If False, frame ``t`` starts at sample ``t * hop_length`` and there are
            ``1 + (time - win_length) // hop_length`` frames; if True, frames are centred on
            ``t * hop_length`` after reflect padding (``1 + time // hop_length`` frames).

    Returns:
        ``log(mel_magnitude + 1e-6)``, dtype of ``waveform``, shape (..., frames, n_mels).

    Raises:
        ValueError: On inconsistent sizes or a waveform shorter than one window.
    """
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be a floating-point tensor, got {waveform.dtype}")
    batch_shape = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1])
    if flat.shape[0] == 0:
        # MKL's FFT rejects an empty batch; one dummy waveform gives the frame count.
        flat = waveform.new_zeros((1, waveform.shape[-1]))
        magnitude = _magnitude_frames(flat, n_fft, win_length, hop_length, center)[:0]
    else:
        magnitude = _magnitude_frames(flat, n_fft, win_length, hop_length, center)
    bank = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max).to(magnitude)
    mel = torch.log(magnitude @ bank + 1e-6)
    return mel.reshape(*batch_shape, *mel.shape[-2:])


def dct_matrix(n_inputs: int, n_outputs: int) -> torch.Tensor:
    """DCT-II basis ``sqrt(2 / N) cos(pi k (n + 1/2) / N)`` (HTK and TensorFlow scaling).

    Unlike the orthonormal DCT (``scipy.fft.dct(norm="ortho")``) the k = 0 row is not divided by
    ``sqrt(2)``; the other rows agree.

    Args:
        n_inputs: ``N``, the length of the transformed axis.
        n_outputs: Number of coefficients kept, at most ``N``.

    Returns:
        float32 (n_inputs, n_outputs): ``x @ matrix`` transforms the last axis of ``x``.

    Raises:
        ValueError: If ``n_outputs`` is not in ``1 .. n_inputs``.
    """
    if not 1 <= n_outputs <= n_inputs:
        raise ValueError(f"need 1 <= n_outputs <= n_inputs, got {n_outputs} and {n_inputs}")
    n = torch.arange(n_inputs, dtype=torch.float64)[:, None]
    k = torch.arange(n_outputs, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * k * (n + 0.5) / n_inputs) * math.sqrt(2.0 / n_inputs)
    return basis.to(torch.float32)


def mfcc(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    n_mfcc: int = 10,
    n_mels: int = 40,
    n_fft: int = 512,
    win_length: int = 480,
    hop_length: int = 320,
    f_min: float = 20.0,
    f_max: float = 4000.0,
    center: bool = False,
) -> torch.Tensor:
    """MFCCs of the MLPerf Tiny keyword-spotting recipe (module docstring; spec §5.4).

    Args:
        waveform: Samples float32 (..., time), nominally in [-1, 1].
        sample_rate: Sample rate of ``waveform`` in Hz.
        n_mfcc: Number of cepstral coefficients kept (at most ``n_mels``).
        n_mels: Number of mel bands.
        n_fft: FFT size.
        win_length: Hann window length in samples.
        hop_length: Distance between frames in samples.
        f_min: Lower edge of the mel bank in Hz.
        f_max: Upper edge of the mel bank in Hz.
        center: Frame placement, as in :func:`log_mel`.

    Returns:
        Coefficients, dtype of ``waveform``, shape (..., frames, n_mfcc); (49, 10) for 16,000
        samples and the defaults.

    Raises:
        ValueError: On inconsistent sizes or a waveform shorter than one window.
    """
    mels = log_mel(
        waveform, sample_rate, n_mels, n_fft, win_length, hop_length, f_min, f_max, center
    )
    return mels @ dct_matrix(n_mels, n_mfcc).to(mels)


@functools.lru_cache(maxsize=16)
def _resample_kernels(
    orig: int, new: int, lowpass_width: int, rolloff: float
) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernels (new, 1, orig + 2 * width) and the half-width."""
    cutoff = rolloff * min(orig, new) / orig  # cycles per input sample, times 2
    width = math.ceil(lowpass_width / cutoff)
    offsets = torch.arange(-width, orig + width, dtype=torch.float64)
    phases = torch.arange(new, dtype=torch.float64)[:, None] * orig / new
    scaled = cutoff * (phases - offsets)  # distance to each input sample, in zero crossings
    window = torch.where(
        scaled.abs() <= lowpass_width,
        torch.cos(math.pi * scaled / (2 * lowpass_width)) ** 2,
        torch.zeros_like(scaled),
    )
    kernels = cutoff * torch.sinc(scaled) * window
    return kernels[:, None, :], width


def resample(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_width: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """Band-limited resampling with a Hann-windowed sinc (polyphase, one ``conv1d``).

    Output sample ``m`` sits at input time ``t = m * orig_freq / new_freq`` and is
    ``sum_k x[k] * c * sinc(c * (t - k)) * cos(pi * c * (t - k) / (2 * lowpass_width))**2`` over
    ``|c * (t - k)| <= lowpass_width``, with ``c = rolloff * min(orig_freq, new_freq) /
    orig_freq`` and ``sinc(u) = sin(pi u) / (pi u)``; samples outside the input count as 0. This
    is the algorithm of ``torchaudio.functional.resample`` (``sinc_interp_hann``), written here so
    that torchaudio is not needed.

    Args:
        waveform: Samples float32 or float64 (..., time).
        orig_freq: Input sample rate in Hz.
        new_freq: Output sample rate in Hz.
        lowpass_width: Zero crossings of the sinc on each side (sharper filter when larger).
        rolloff: Cutoff as a fraction of the lower Nyquist frequency, in (0, 1].

    Returns:
        Resampled samples, dtype of ``waveform``, shape (..., ceil(time * new_freq / orig_freq)).

    Raises:
        ValueError: On non-positive rates, ``lowpass_width < 1`` or ``rolloff`` outside (0, 1].
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} and {new_freq}")
    if lowpass_width < 1 or not 0 < rolloff <= 1:
        raise ValueError(
            f"need lowpass_width >= 1 and 0 < rolloff <= 1, got {lowpass_width} and {rolloff}"
        )
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be a floating-point tensor, got {waveform.dtype}")
    if orig_freq == new_freq:
        return waveform.clone()
    divisor = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // divisor, new_freq // divisor
    kernels, width = _resample_kernels(orig, new, lowpass_width, rolloff)
    batch_shape, length = waveform.shape[:-1], waveform.shape[-1]
    target = math.ceil(length * new / orig)
    blocks = math.ceil(target / new)
    # Enough right padding for `blocks` strided windows of orig + 2 * width samples.
    right = blocks * orig + width - length
    flat = F.pad(waveform.reshape(-1, 1, length), (width, right))
    out = F.conv1d(flat, kernels.to(waveform), stride=orig)  # (batch, new, blocks)
    out = out.transpose(1, 2).reshape(-1, blocks * new)[:, :target]
    return out.reshape(*batch_shape, target)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM mono WAV file with the standard library.

    Args:
        path: The file.

    Returns:
        ``(samples, sample_rate)``: samples float32 (n,), the int16 values / 32768, in [-1, 1).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable WAV, is not 16-bit PCM mono, or holds fewer
            sample bytes than its header declares. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WAV file {path} not found")
    try:
        with wave.open(str(path), "rb") as reader:
            channels, width = reader.getnchannels(), reader.getsampwidth()
            rate, frames = reader.getframerate(), reader.getnframes()
            if channels != 1 or width != 2:
                raise ValueError(
                    f"{path}: expected 16-bit PCM mono, got {channels} channel(s) of "
                    f"{8 * width} bits; convert it, e.g. sox in.wav -b 16 -c 1 out.wav"
                )
            data = reader.readframes(frames)
    except (wave.Error, EOFError) as error:
        raise ValueError(f"{path}: not a readable PCM WAV file ({error})") from error
    if len(data) != 2 * frames:
        raise ValueError(
            f"{path}: truncated WAV data: header declares {frames} samples ({2 * frames} bytes), "
            f"found {len(data)} bytes"
        )
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768)
    return samples, rate


def fit_length(samples: np.ndarray | torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad at the end or trim the end of the last axis to exactly ``length`` samples.

    Args:
        samples: Samples (..., time), numpy or torch.
        length: Wanted number of samples.

    Returns:
        float32 tensor (..., length).
    """
    tensor = torch.as_tensor(samples, dtype=torch.float32)
    if tensor.shape[-1] >= length:
        return tensor[..., :length].clone()
    return F.pad(tensor, (0, length - tensor.shape[-1]))
