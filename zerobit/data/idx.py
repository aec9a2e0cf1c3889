# SPDX-License-Identifier: Apache-2.0
# Reader and writer for IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
"""IDX file format.

An IDX file is a 4-byte magic ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32
dimension sizes, then the elements in C order, big-endian. MNIST images use magic ``0x00000803``
(uint8, 3 dims) and labels ``0x00000801`` (uint8, 1 dim). A file may be gzip-compressed; it is
recognised by the gzip signature, not by its name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

# IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_SIGNATURE = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({error})") from error


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file.

    Args:
        path: File to read; gzip-compressed content is decompressed transparently.

    Returns:
        The array with the file's shape and element type, in native byte order (e.g. uint8
        (N, 28, 28) for MNIST images, uint8 (N,) for labels).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the magic number is wrong, the dtype code is unsupported, or the payload is
            shorter or longer than the header's dimensions say. The message names the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need at least 4)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic 0x{data[:4].hex()} does not start with 0x0000)"
        )
    if dtype_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise ValueError(f"{path}: unsupported IDX dtype code 0x{dtype_code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need "
            f"{header_size})"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = IDX_DTYPES[dtype_code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "oversized"
        raise ValueError(
            f"{path}: {problem} IDX payload: shape {shape} of {dtype.name} needs {expected} bytes "
            f"after the header, found {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    The gzip header carries no timestamp, so equal arrays give byte-identical files.

    Args:
        path: Destination file.
        array: Array of uint8, int8, int16, int32, float32 or float64 with 1 to 255 dimensions,
            each smaller than 2**32.

    Raises:
        ValueError: If the dtype or shape cannot be represented in IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        names = ", ".join(sorted(map(str, codes)))
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {names}")
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX cannot store an array of shape {array.shape}")
    header = struct.pack(f">HBB{array.ndim}I", 0, codes[native], array.ndim, *array.shape)
    payload = np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    content = header + payload
    if path.name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
