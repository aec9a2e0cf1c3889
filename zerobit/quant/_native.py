# SPDX-License-Identifier: Apache-2.0
# Optional C++ kernels for zerobit.quant.ste, compiled at first use; pure torch when they cannot be.
"""Native CPU kernels of the straight-through mixtures.

:func:`zerobit.quant.mixed_act_quant` and :func:`zerobit.quant.mixed_weight_quant` call them on
the CPU. ``csrc/ste.cpp`` is a plain C ABI library (no torch headers, so it builds in a few
seconds and does not depend on the torch version) called through :mod:`ctypes`. It is compiled
the first time a kernel is needed, with ``$CXX`` (default ``c++``; GCC or Clang with OpenMP),
into ``zerobit_native/`` in torch's extensions cache (``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), under a name that hashes the source and the flags, and reused
from there by later processes. Processes that start at once wait on one build (an OS file lock,
released even if the builder is killed) and the library is installed by an atomic rename, so no
process loads a partial file. When the build fails (no compiler, an unwritable cache, not
Linux), one ``RuntimeWarning`` says why and :mod:`zerobit.quant.ste` keeps its pure-torch path,
which gives the same values.

Set ``ZEROBIT_NATIVE=0`` to use the pure-torch path without trying to build.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "act_backward",
    "act_forward",
    "available",
    "enabled",
    "supports",
    "supports_weight",
    "weight_backward",
    "weight_forward",
]

ENV_VARIABLE = "ZEROBIT_NATIVE"
_SOURCE = Path(__file__).with_name("csrc") / "ste.cpp"
_DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_tried = False
_library: ctypes.CDLL | None = None


def enabled() -> bool:
    """Whether the native kernels may be used (``ZEROBIT_NATIVE`` is not ``0``)."""
    return os.environ.get(ENV_VARIABLE, "1").strip() != "0"


def available() -> bool:
    """Whether the native kernels are enabled and built; builds them on the first call.

    Returns:
        False when ``ZEROBIT_NATIVE=0`` or the build failed (a warning said why).
    """
    return enabled() and _load() is not None


def supports(x: Tensor) -> bool:
    """Whether the native kernels can process ``x`` (strided float32/float64 on the CPU).

    Args:
        x: The activation tensor of a mixture.

    Returns:
        True when the kernels are available and take ``x``.
    """
    return (
        x.device.type == "cpu" and x.layout == torch.strided and x.dtype in _DTYPES and available()
    )


def supports_weight(weight: Tensor, probs: Tensor, ranges: Tensor) -> bool:
    """Whether the native kernels can process a weight mixture (see :func:`supports`).

    Args:
        weight: Latent weights (C_out, ...).
        probs: Probabilities (P, C_out); must share the dtype of ``weight``.
        ranges: Per-candidate channel ranges (P, C_out); must share the dtype of ``weight``.

    Returns:
        True when the kernels are available and take these tensors.
    """
    return all(
        t.dtype == weight.dtype and t.device == weight.device and t.layout == torch.strided
        for t in (probs, ranges)
    ) and supports(weight)


def weight_forward(weight: Tensor, probs: Tensor, levels: Sequence[int], ranges: Tensor) -> Tensor:
    """Return ``W_eff[c] = sum_p probs[p, c] * Q_p(W)[c]`` in one pass.

    Bit-identical to the pure-torch forward of :func:`zerobit.quant.mixed_weight_quant`. Call
    only when :func:`supports_weight` is true.

    Args:
        weight: float32 or float64 CPU tensor (C_out, ...).
        probs: (P, C_out), dtype of ``weight``; no gradient is taken here.
        levels: Per candidate ``n_p`` (0 for the pruned one).
        ranges: (P, C_out), dtype of ``weight``: candidate p's scale in channel c is
            ``ranges[p, c] / n_p``.

    Returns:
        Contiguous, shaped like ``weight``.
    """
    library = _library_or_raise()
    # Named, so that copies made by contiguous() outlive the call.
    source, theta = weight.detach().contiguous(), probs.detach().contiguous()
    bounds = ranges.detach().contiguous()
    mixed = torch.empty_like(source)
    function = (
        library.zerobit_weight_forward_f32
        if weight.dtype == torch.float32
        else library.zerobit_weight_forward_f64
    )
    channels = source.shape[0]
    status = function(
        source.data_ptr(),
        theta.data_ptr(),
        mixed.data_ptr(),
        channels,
        source.numel() // max(channels, 1),
        len(levels),
        (ctypes.c_int64 * len(levels))(*levels),
        bounds.data_ptr(),
    )
    _check(status)
    return mixed


def weight_backward(weight: Tensor, grad: Tensor, levels: Sequence[int], ranges: Tensor) -> Tensor:
    """Return ``dL/dprobs[p, c] = sum over channel c of g * Q_p(W)[c]``, (P, C_out).

    Accumulated in float64 per channel, then multiplied by the scale in the dtype of ``weight``
    (the pure-torch path sums in that dtype: the two agree to its rounding).

    Args:
        weight: The saved latent weights (C_out, ...), as for :func:`weight_forward`.
        grad: ``dL/dW_eff``, shaped like ``weight``, same dtype.
        levels: Per candidate ``n_p`` (0 for the pruned one).
        ranges: (P, C_out) channel ranges, as for :func:`weight_forward`.

    Returns:
        (P, C_out), dtype of ``weight``; the pruned candidate's row is 0.
    """
    library = _library_or_raise()
    source, gradient = weight.detach().contiguous(), grad.contiguous()
    bounds = ranges.detach().contiguous()
    channels = source.shape[0]
    grad_probs = source.new_empty((len(levels), channels))
    function = (
        library.zerobit_weight_backward_f32
        if weight.dtype == torch.float32
        else library.zerobit_weight_backward_f64
    )
    status = function(
        source.data_ptr(),
        gradient.data_ptr(),
        grad_probs.data_ptr(),
        channels,
        source.numel() // max(channels, 1),
        len(levels),
        (ctypes.c_int64 * len(levels))(*levels),
        bounds.data_ptr(),
    )
    _check(status)
    return grad_probs


def act_forward(
    x: Tensor,
    scales: Sequence[float],
    ranges: Sequence[tuple[int, int]],
    weights: Sequence[float],
) -> Tensor:
    """Return ``sum_k weights[k] * clamp(round(x / scales[k]), *ranges[k])`` in one pass.

    Bit-identical to the pure-torch forward of :mod:`zerobit.quant.ste` (the contract is stated
    at the top of ``csrc/ste.cpp``). Call only when :func:`supports` is true for ``x``.

    Args:
        x: float32 or float64 CPU tensor, any shape.
        scales: The active candidates' scales ``s_k`` (cast to ``x.dtype``).
        ranges: Their code ranges ``(lo_k, hi_k)``.
        weights: Their factors ``probs[k] * s_k`` (cast to ``x.dtype``); at least one.

    Returns:
        Contiguous, shaped like ``x``, same dtype.

    Raises:
        MemoryError: If the kernel could not allocate its work space.
    """
    library = _library_or_raise()
    source = x.contiguous()
    mixed = torch.empty_like(source)
    lows, highs = _bounds(ranges)
    function = (
        library.zerobit_act_forward_f32
        if x.dtype == torch.float32
        else library.zerobit_act_forward_f64
    )
    status = function(
        source.data_ptr(),
        mixed.data_ptr(),
        source.numel(),
        len(scales),
        _doubles(scales),
        _doubles(lows),
        _doubles(highs),
        _doubles(weights),
        torch.get_num_threads(),
    )
    _check(status)
    return mixed


def act_backward(
    x: Tensor,
    grad: Tensor,
    scales: Sequence[float],
    ranges: Sequence[tuple[int, int]],
    theta: Sequence[float],
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor]:
    """Return ``dL/dx`` and the per-candidate sums of the backward pass in one pass.

    Call only when :func:`supports` is true for ``x``.

    Args:
        x: The saved input, float32 or float64 on the CPU.
        grad: ``dL/dy``, shaped like ``x``, same dtype and device.
        scales: Every candidate's scale ``s_q``.
        ranges: Every candidate's code range ``(lo_q, hi_q)``.
        theta: Every candidate's probability.
        needs: Whether ``x``, the clips and the probabilities need gradients.

    Returns:
        ``(grad_x, sums)``: ``grad_x`` contiguous, shaped like ``x`` (None unless ``needs[0]``);
        ``sums`` float64 (Q, 2), per candidate ``sum g * codes_q`` and ``sum g * d_q``, 0 where
        not needed (``d_q`` and the zero-probability rule of
        :func:`zerobit.quant.mixed_act_quant`), accumulated in float64 (float32 input on AVX2:
        in float32 vector lanes per 512-element block, the blocks in float64), in an order that
        does not depend on the thread count.

    Raises:
        ValueError: If ``grad`` does not match ``x``.
        MemoryError: If the kernel could not allocate its work space.
    """
    if grad.shape != x.shape or grad.dtype != x.dtype or grad.device != x.device:
        raise ValueError("grad must match x in shape, dtype and device")
    library = _library_or_raise()
    source, gradient = x.contiguous(), grad.contiguous()
    grad_x = torch.empty_like(source) if needs[0] else None
    sums = torch.empty((len(scales), 2), dtype=torch.float64)
    lows, highs = _bounds(ranges)
    function = (
        library.zerobit_act_backward_f32
        if x.dtype == torch.float32
        else library.zerobit_act_backward_f64
    )
    status = function(
        source.data_ptr(),
        gradient.data_ptr(),
        None if grad_x is None else grad_x.data_ptr(),
        source.numel(),
        len(scales),
        _doubles(scales),
        _doubles(lows),
        _doubles(highs),
        _doubles(theta),
        int(needs[1]),
        int(needs[2]),
        sums.data_ptr(),
        torch.get_num_threads(),
    )
    _check(status)
    return grad_x, sums


def _bounds(ranges: Sequence[tuple[int, int]]) -> tuple[list[float], list[float]]:
    return [float(low) for low, _ in ranges], [float(high) for _, high in ranges]


def _doubles(values: Sequence[float]) -> ctypes.Array[ctypes.c_double]:
    return (ctypes.c_double * len(values))(*values)


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("zerobit native kernel: out of memory")


def _library_or_raise() -> ctypes.CDLL:
    library = _load()
    if library is None:
        raise RuntimeError("the zerobit native kernels are not available")
    return library


def _load() -> ctypes.CDLL | None:
    """Return the compiled library, or None if the build failed (warned once per process)."""
    global _tried, _library
    if _tried:
        return _library
    with _lock:
        if not _tried:
            try:
                _library = _declare(ctypes.CDLL(str(_build())))
            except Exception as error:  # any failure leaves the pure-torch path, which is exact
                message = " ".join(str(error).split())
                warnings.warn(
                    f"zerobit: could not build the native CPU kernels ({type(error).__name__}: "
                    f"{message[-600:]}); using the slower pure-torch path. Set "
                    f"{ENV_VARIABLE}=0 to skip the build.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            _tried = True
    return _library


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """Set the C signatures (see the end of ``csrc/ste.cpp``)."""
    pointer, size, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    doubles, levels = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int64)
    for suffix in ("f32", "f64"):
        forward = getattr(library, f"zerobit_act_forward_{suffix}")
        forward.argtypes = [pointer, pointer, size, size, doubles, doubles, doubles, doubles, flag]
        forward.restype = flag
        backward = getattr(library, f"zerobit_act_backward_{suffix}")
        backward.argtypes = [
            pointer, pointer, pointer, size, size,
            doubles, doubles, doubles, doubles, flag, flag, pointer, flag,
        ]  # fmt: skip
        backward.restype = flag
        for direction in ("forward", "backward"):
            weight = getattr(library, f"zerobit_weight_{direction}_{suffix}")
            weight.argtypes = [pointer, pointer, pointer, size, size, size, levels, pointer]
            weight.restype = flag
    return library


def _instruction_set() -> tuple[str, list[str]]:
    """Return a tag and the compiler flags for the instruction set of torch's own kernels."""
    if platform.machine().lower() in ("x86_64", "amd64") and (
        torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    ):
        # FMA must match torch: its AVX2 and AVX512 kernels fuse add(..., alpha=).
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def _cache_directory() -> Path:
    """Return the folder of the compiled kernels, inside torch's extensions cache."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        root = os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions"
        )
    return Path(root) / "zerobit_native"


def _build() -> Path:
    """Compile the kernels unless the cache holds them; return the shared library's path."""
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"the native build supports Linux only, not {sys.platform}")
    compiler = os.environ.get("CXX") or "c++"
    tag, isa_flags = _instruction_set()
    flags = [
        "-O3",
        "-std=c++17",
        "-shared",
        "-fPIC",
        # libgomp.so.1 resolves to the copy torch has loaded: one OpenMP thread pool.
        "-fopenmp",
        # No contraction into FMAs, which would round differently from torch; no trapping math,
        # so that the branch-free selects vectorize (values are unchanged).
        "-ffp-contract=off",
        "-fno-trapping-math",
        *isa_flags,
    ]
    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update("\0".join([compiler, *flags]).encode())
    directory = _cache_directory()
    target = directory / f"ste_{tag}_{digest.hexdigest()[:16]}.so"
    if target.exists():  # installed atomically below: it exists whole or not at all
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory / "build.lock"):
        if not target.exists():  # another process may have built it while we waited
            with tempfile.TemporaryDirectory(dir=directory) as scratch:
                built = Path(scratch) / target.name
                command = [compiler, *flags, str(_SOURCE), "-o", str(built)]
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
                if result.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
                os.replace(built, target)
    return target


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an OS file lock, which the kernel releases if the process dies mid-build."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
