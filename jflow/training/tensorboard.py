"""Scalar metrics to TensorBoard event files (no TensorFlow needed) and to a JSON-lines log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class MetricsWriter:
    """Writes scalars to ``<dir>/events.out.tfevents.*`` and ``<dir>/metrics.jsonl``.

    ``metrics.jsonl`` has one JSON object per logged step (``{"step": ..., name: value}``), the
    easiest form to read back in a notebook or a test. Call :meth:`close` (or use ``with``).
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._events = EventFileWriter(str(self.log_dir))
        self._jsonl = open(self.log_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115

    def scalars(self, step: int, values: dict[str, float]) -> None:
        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()
            ]
        )
        self._events.add_event(
            event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )
        self._jsonl.write(
            json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n"
        )

    def flush(self) -> None:
        self._events.flush()
        self._jsonl.flush()

    def close(self) -> None:
        self._events.close()
        self._jsonl.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(log_dir: str | os.PathLike) -> list[dict]:
    """The entries of ``metrics.jsonl``; later entries for the same step win (a resumed run)."""
    path = Path(log_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_step[entry["step"]] = entry
    return [by_step[s] for s in sorted(by_step)]
