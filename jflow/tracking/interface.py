"""The interface every point tracker implements.

Queries are ``(t, y, x)`` as in TAP-Vid: the frame index, then the pixel coordinates of the
point in that frame (pixel convention of docs/conventions.md). Tracks come back in TAP-Vid's
``[N, T, 2]`` layout as ``(x, y)``; :func:`jflow.flow` code transposes to ``[T, N, ...]``.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np
from jaxtyping import Bool, Float, UInt8

from jflow.errors import ShapeError


@dataclasses.dataclass(frozen=True)
class TrackResult:
    """The output of a tracker for N query points over T frames.

    ``occlusion`` is the probability that a point is occluded and ``uncertainty`` the
    probability that its position is off by more than the tracker's threshold, where the
    tracker estimates them (TAPIR does); ``None`` otherwise.
    """

    tracks: Float[np.ndarray, "N T 2"]
    visible: Bool[np.ndarray, "N T"]
    occlusion: Float[np.ndarray, "N T"] | None = None
    uncertainty: Float[np.ndarray, "N T"] | None = None

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[1])


@runtime_checkable
class PointTracker(Protocol):
    """Anything with ``track(video, queries) -> TrackResult``."""

    def track(
        self, video: UInt8[np.ndarray, "T H W 3"], queries: Float[np.ndarray, "N 3"]
    ) -> TrackResult: ...


def check_track_inputs(video: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a tracker's inputs and return them as ``uint8`` video and ``float32`` queries.

    Raises :class:`ShapeError` naming the problem: wrong rank, channel count, dtype, a video
    without frames or pixels, a query frame outside ``[0, T)`` or a query point outside the
    image. No queries (``[0, 3]``) is valid: trackers return empty ``[0, T, ...]`` results. A
    single frame is valid: each track is its query point.
    """
    video = np.asarray(video)
    queries = np.asarray(queries)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ShapeError(f"video must be [T, H, W, 3], got shape {video.shape}")
    if video.dtype != np.uint8:
        raise ShapeError(f"video must be uint8 RGB, got dtype {video.dtype}")
    if video.shape[0] == 0 or video.shape[1] == 0 or video.shape[2] == 0:
        raise ShapeError(f"the video is empty: shape {video.shape} (no frames or no pixels)")
    if queries.ndim != 2 or queries.shape[-1] != 3:
        raise ShapeError(f"queries must be [N, 3] as (t, y, x), got shape {queries.shape}")
    if not np.all(np.isfinite(queries)):
        raise ShapeError("queries contain NaN or inf")
    t, h, w = video.shape[:3]
    frames = queries[:, 0]
    if np.any(frames < 0) or np.any(frames >= t) or np.any(frames != np.round(frames)):
        raise ShapeError(
            f"query frame indices must be integers in [0, {t}), got {frames.min()}..{frames.max()}"
        )
    ys, xs = queries[:, 1], queries[:, 2]
    if np.any(xs < 0) or np.any(xs > w) or np.any(ys < 0) or np.any(ys > h):
        raise ShapeError(f"query points must lie inside the {w}x{h} image")
    return video, queries.astype(np.float32)
