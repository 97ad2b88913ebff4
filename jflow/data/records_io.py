"""Encoding one record (a flat dict of numpy arrays) to bytes and back.

Records are stored as uncompressed ``.npz`` bytes: any numpy dtype, no pickle on load (so a
record file cannot execute code), and readable with plain ``numpy.load``.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from jflow.errors import DataError


def encode_record(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a flat ``{name: array}`` dict (strings become 0-d unicode arrays)."""
    buffer = io.BytesIO()
    converted = {}
    for key, value in arrays.items():
        array = np.asarray(value)
        if array.dtype == object:
            raise DataError(f"record field {key!r} has dtype object, which cannot be stored safely")
        converted[key] = array
    np.savez(buffer, **converted)
    return buffer.getvalue()


def decode_record(data: bytes, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_record`; ``source`` names the file in error messages."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"a record in {source} is corrupt: {err}") from err
