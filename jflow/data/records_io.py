"""Encoding one record (a flat dict of numpy arrays) to bytes and back.

Records are stored as uncompressed ``.npz`` bytes: any numpy dtype, no pickle on load (so a
record file cannot execute code), and readable with plain ``numpy.load``.
"""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np

from jflow.errors import DataError

_DECODE_LOCK = threading.Lock()
"""Serialises :func:`decode_record`. numpy parses each array header with ``ast.literal_eval``,
and CPython 3.11 (3.11.7 here) can fail with ``SystemError: AST constructor recursion depth
mismatch`` when several threads build ASTs at once (its AST depth bookkeeping, CPython issues
106905 and 95185): it stopped a training run here at step 180, with grain's reader threads
decoding records in parallel. Decoding one record takes about a millisecond, against most of a
second per train step, so the lock does not slow training."""


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
        with _DECODE_LOCK, np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"a record in {source} is corrupt: {err}") from err
