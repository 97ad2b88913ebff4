"""Sharded record files (ArrayRecord) with a JSON manifest, and a grain data source over them.

A dataset folder holds ``manifest.json`` and ``shards/*.array_record``. The manifest lists every
shard with its record count and byte size, so that a truncated or replaced shard is detected
when the dataset is opened, before training reads garbage. See docs/data.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from array_record.python import array_record_module

from jflow.data.records_io import decode_record, encode_record
from jflow.errors import ConfigError, DataError, OutputError

MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
FORMAT_VERSION = 1


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Make sure ``out_dir`` can receive a new dataset without destroying anything.

    Raises :class:`OutputError` when the folder cannot be created or written, or when it already
    holds a dataset (``manifest.json``) or other files and ``overwrite`` is False.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder {out}: {err.strerror or err}") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {out} is not writable")
    try:  # os.access can be fooled (root, read-only mounts): really try.
        with tempfile.NamedTemporaryFile(dir=out, prefix=".jflow-write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"output folder {out} is not writable: {err.strerror or err}") from err
    existing = [p.name for p in out.iterdir() if not p.name.startswith(".jflow-write-test-")]
    if existing and not overwrite:
        raise OutputError(
            f"output folder {out} is not empty ({', '.join(sorted(existing)[:5])}"
            f"{', ...' if len(existing) > 5 else ''}); choose an empty folder or pass --overwrite"
        )
    return out


class ShardedWriter:
    """Writes records round-robin into ``num_shards`` ArrayRecord files under ``out/shards``.

    Use as a context manager; :meth:`close` returns the shard entries for the manifest.
    """

    def __init__(self, out_dir: str | os.PathLike, num_shards: int, prefix: str = "clips"):
        if num_shards < 1:
            raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
        self.out_dir = Path(out_dir)
        (self.out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.paths = [
            Path(SHARD_DIR) / f"{prefix}-{i:05d}-of-{num_shards:05d}.array_record"
            for i in range(num_shards)
        ]
        # group_size:1 keeps random access to single records cheap.
        self._writers = [
            array_record_module.ArrayRecordWriter(str(self.out_dir / p), "group_size:1")
            for p in self.paths
        ]
        self._counts = [0] * num_shards
        self._next = 0
        self.index: list[dict[str, Any]] = []

    def write(self, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        shard = self._next
        self._writers[shard].write(encode_record(arrays))
        self.index.append({"shard": shard, "offset": self._counts[shard], **(meta or {})})
        self._counts[shard] += 1
        self._next = (self._next + 1) % len(self._writers)

    def close(self) -> list[dict[str, Any]]:
        for writer in self._writers:
            writer.close()
        self._writers = []
        return [
            {"path": str(p), "num_records": c, "bytes": (self.out_dir / p).stat().st_size}
            for p, c in zip(self.paths, self._counts, strict=True)
        ]

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._writers:
            self.close()


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (a temporary file renamed into place)."""
    path = Path(out_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2))
    tmp.replace(path)
    return path


def read_manifest(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"no dataset at {dataset_dir}: {MANIFEST_NAME} not found")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {manifest.get('format_version')!r}; "
            f"this jflow reads version {FORMAT_VERSION}"
        )
    if "shards" not in manifest:
        raise DataError(f"{path} lists no shards")
    return manifest


def verify_shards(dataset_dir: str | os.PathLike, manifest: dict[str, Any]) -> list[Path]:
    """Check every shard exists with the size the manifest records; raise naming the file."""
    root = Path(dataset_dir)
    paths = []
    for entry in manifest["shards"]:
        path = root / entry["path"]
        if not path.is_file():
            raise DataError(f"shard {path} listed in {root / MANIFEST_NAME} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise DataError(
                f"shard {path} is truncated or modified: {size} bytes on disk, "
                f"{entry['bytes']} bytes when it was written"
            )
        paths.append(path)
    return paths


class ShardedDataSource:
    """A grain random-access data source over a dataset folder; items are decoded record dicts.

    It implements grain's ``RandomAccessDataSource`` protocol (``__len__``, ``__getitem__``,
    ``__repr__``), so ``grain.MapDataset.source(ShardedDataSource(path))`` works.

    Record ``i`` is the ``i``-th entry of the manifest's index (generation order). Opening the
    source verifies the shards against the manifest; a corrupt record raises
    :class:`DataError` naming its shard.
    """

    def __init__(self, dataset_dir: str | os.PathLike):
        self.dataset_dir = Path(dataset_dir)
        self.manifest = read_manifest(self.dataset_dir)
        self._paths = verify_shards(self.dataset_dir, self.manifest)
        self._index: list[dict[str, Any]] = list(self.manifest.get("index", []))
        counts = [int(e["num_records"]) for e in self.manifest["shards"]]
        if not self._index:  # No index: shards in order.
            self._index = [
                {"shard": s, "offset": o} for s, c in enumerate(counts) for o in range(c)
            ]
        if len(self._index) != sum(counts):
            raise DataError(
                f"{self.dataset_dir / MANIFEST_NAME}: index has {len(self._index)} entries but the "
                f"shards hold {sum(counts)} records"
            )
        self._readers: dict[int, Any] = {}

    def _reader(self, shard: int):
        reader = self._readers.get(shard)
        if reader is None:
            path = self._paths[shard]
            try:
                reader = array_record_module.ArrayRecordReader(str(path))
            except RuntimeError as err:  # Riegeli reports corruption as RuntimeError.
                raise DataError(f"shard {path} is corrupt: {err}") from err
            self._readers[shard] = reader
        return reader

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, record_key: int) -> dict[str, np.ndarray]:
        if not 0 <= record_key < len(self._index):
            raise IndexError(f"record {record_key} out of range for {len(self)} records")
        entry = self._index[record_key]
        shard = int(entry["shard"])
        path = self._paths[shard]
        try:
            data = self._reader(shard).read([int(entry["offset"])])[0]
        except RuntimeError as err:
            raise DataError(f"shard {path} is corrupt: {err}") from err
        return decode_record(data, source=str(path))

    def metadata(self, record_key: int) -> dict[str, Any]:
        """The manifest's index entry of a record (task, seed, camera...)."""
        return dict(self._index[record_key])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self):  # Readers are not picklable; grain workers reopen them.
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state

    def __repr__(self) -> str:
        return f"ShardedDataSource({str(self.dataset_dir)!r}, records={len(self)})"


def write_records(
    out_dir: str | os.PathLike,
    records: Iterable[tuple[dict[str, np.ndarray], dict[str, Any]]],
    *,
    num_shards: int,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Write ``(arrays, meta)`` records and a manifest; returns the manifest written."""
    with ShardedWriter(out_dir, num_shards) as writer:
        for arrays, meta in records:
            writer.write(arrays, meta)
        shards = writer.close()
    full = {**manifest, "shards": shards, "index": writer.index}
    write_manifest(out_dir, full)
    return read_manifest(out_dir)


def shard_paths(manifest: dict[str, Any]) -> Sequence[str]:
    return [entry["path"] for entry in manifest["shards"]]
