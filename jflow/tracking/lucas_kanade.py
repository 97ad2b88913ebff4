"""A weights-free point tracker: OpenCV's pyramidal Lucas-Kanade with a forward-backward check.

Each query ``(t, y, x)`` is tracked frame to frame from its query frame forwards to the last
frame and backwards to the first. At every step the point is also tracked back from the new
frame to the old one; when that round trip misses the starting position by more than
``fb_threshold_px``, or OpenCV reports failure, or the point leaves the image, the point is
marked not visible in the new frame. A point that is lost keeps being tracked from its last
estimate, but its position is then the tracker's best guess, not a measurement, and by default
it stays not visible (see ``relocate``).

Coordinates follow docs/conventions.md (pixel corners at integers); OpenCV's sub-pixel
functions put pixel centres at integers, so 0.5 is removed before and added after OpenCV.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from jflow.errors import ConfigError
from jflow.tracking.interface import TrackResult, check_track_inputs


@dataclasses.dataclass(frozen=True)
class LucasKanadeTracker:
    """Pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) implementing ``PointTracker``.

    ``win_size`` is the square search window in pixels at each pyramid level, ``max_level`` the
    number of pyramid levels above the full image, ``fb_threshold_px`` the largest
    forward-backward round-trip error (pixels) for a point to count as visible. With
    ``relocate=False`` (default) a point that fails the check once stays not visible for the
    rest of the pass (LK cannot tell a point re-appearing from a point that slid onto an
    occluder); with ``relocate=True`` it counts as visible again whenever the check passes.
    """

    win_size: int = 31
    max_level: int = 3
    fb_threshold_px: float = 1.0
    max_iterations: int = 30
    epsilon: float = 0.01
    relocate: bool = False

    def __post_init__(self) -> None:
        if self.win_size < 3 or self.win_size % 2 == 0:
            raise ConfigError(f"win_size must be an odd integer >= 3, got {self.win_size}")
        if self.max_level < 0:
            raise ConfigError(f"max_level must be >= 0, got {self.max_level}")
        if not self.fb_threshold_px > 0:
            raise ConfigError(f"fb_threshold_px must be > 0, got {self.fb_threshold_px}")

    def _lk(self, img0: np.ndarray, img1: np.ndarray, pts: np.ndarray):
        criteria = (
            cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
            self.max_iterations,
            self.epsilon,
        )
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(
            img0,
            img1,
            pts.reshape(-1, 1, 2),
            None,
            winSize=(self.win_size, self.win_size),
            maxLevel=self.max_level,
            criteria=criteria,
        )
        return nxt.reshape(-1, 2), status.reshape(-1).astype(bool)

    def _step(self, img0: np.ndarray, img1: np.ndarray, pts: np.ndarray, size: tuple[int, int]):
        """Track ``pts`` (OpenCV centre convention) from ``img0`` to ``img1``; return pts, ok."""
        fwd, ok_f = self._lk(img0, img1, pts)
        back, ok_b = self._lk(img1, img0, fwd)
        fb_err = np.linalg.norm(back - pts, axis=-1)
        w, h = size
        inside = (
            (fwd[:, 0] >= -0.5)
            & (fwd[:, 0] < w - 0.5)
            & (fwd[:, 1] >= -0.5)
            & (fwd[:, 1] < h - 0.5)
        )
        finite = np.all(np.isfinite(fwd), axis=-1)
        ok = ok_f & ok_b & finite & inside & (fb_err <= self.fb_threshold_px)
        # Failed or non-finite steps keep the previous estimate.
        new = np.where((ok_f & finite)[:, None], fwd, pts)
        return new.astype(np.float32), ok

    def track(
        self, video: UInt8[np.ndarray, "T H W 3"], queries: Float[np.ndarray, "N 3"]
    ) -> TrackResult:
        """Track ``queries`` ``(t, y, x)`` through ``video``; tracks ``[N, T, 2]`` as ``(x, y)``."""
        video, queries = check_track_inputs(video, queries)
        t_len, h, w = video.shape[:3]
        n = queries.shape[0]
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video]
        tracks = np.zeros((n, t_len, 2), np.float32)
        visible = np.zeros((n, t_len), bool)
        q_frames = queries[:, 0].astype(np.int64)
        for q_t in np.unique(q_frames):
            idx = np.flatnonzero(q_frames == q_t)
            start = queries[idx][:, [2, 1]] - 0.5  # (x, y) in OpenCV's centre convention
            tracks[idx, q_t] = start
            visible[idx, q_t] = True
            for direction in (1, -1):
                pts = start.copy()
                alive = np.ones(len(idx), bool)
                t = q_t
                while 0 <= t + direction < t_len:
                    pts, ok = self._step(gray[t], gray[t + direction], pts, (w, h))
                    t += direction
                    if not self.relocate:
                        alive &= ok
                        ok = alive
                    tracks[idx, t] = pts
                    visible[idx, t] = ok
        return TrackResult(tracks=tracks + 0.5, visible=visible)


__all__ = ["LucasKanadeTracker"]
