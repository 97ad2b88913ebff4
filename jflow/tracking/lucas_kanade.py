"""A weights-free point tracker: OpenCV's pyramidal Lucas-Kanade with occlusion checks.

Each query ``(t, y, x)`` is tracked frame to frame from its query frame forwards to the last
frame and backwards to the first. At every step two checks decide whether the point is still
seen:

* **forward-backward**: the point is tracked back from the new frame to the old one; the round
  trip must land within ``fb_threshold_px`` of where it started (and OpenCV must report
  success, and the point must stay inside the image);
* **appearance**: the normalised cross-correlation between a ``(2 * ncc_radius + 1)``-pixel
  square patch around the point in the new frame and the same patch around the query point in
  the query frame must be at least ``min_ncc``. A point that an occluder slides over usually
  passes the first check (LK follows the occluder consistently) but fails this one.

A point that fails a check is *lost*: it is marked not visible, and (by default, see
``relocate``) stays not visible for the rest of the pass. Its position is then a guess, not a
measurement: it moves by the median step of its ``neighbors`` nearest points (nearest at the
query frame) that are still tracked in this step, or holds still when none of them is. On a
rigid or articulated object this keeps lost points on the object; a background point that a
moving arm covers keeps its place.

Coordinates follow docs/conventions.md (pixel corners at integers); OpenCV's sub-pixel
functions put pixel centres at integers, so 0.5 is removed before and added after OpenCV.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from jaxtyping import Float, Int, UInt8

from jflow.errors import ConfigError
from jflow.tracking.interface import TrackResult, check_track_inputs

# Neighbour candidates per point: the nearest ``_CANDIDATES * neighbors`` points at the query
# frame, of which the first ``neighbors`` still tracked in a step give a lost point its step.
_CANDIDATES = 4


def patches(
    image: Float[np.ndarray, "H W"], points: Float[np.ndarray, "N 2"], radius: int
) -> Float[np.ndarray, "N P"]:
    """Bilinear ``(2 * radius + 1)^2``-pixel patches of ``image`` around ``points`` (OpenCV
    centre convention: pixel centres at integers); borders replicate the edge pixels."""
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    ox, oy = np.meshgrid(offsets, offsets)
    map_x = (points[:, :1] + ox.reshape(1, -1)).astype(np.float32)
    map_y = (points[:, 1:2] + oy.reshape(1, -1)).astype(np.float32)
    return cv2.remap(
        image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def normalized_cross_correlation(
    a: Float[np.ndarray, "N P"], b: Float[np.ndarray, "N P"]
) -> Float[np.ndarray, " N"]:
    """Row-wise normalised cross-correlation in ``[-1, 1]``; 1 where either row is flat (no
    texture to compare: Lucas-Kanade's own eigenvalue test rejects such points)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    flat = denom < 1e-3
    return np.where(flat, 1.0, np.sum(a * b, axis=1) / np.where(flat, 1.0, denom))


def neighbor_candidates(
    points: Float[np.ndarray, "N 2"], count: int, chunk: int = 1024
) -> Int[np.ndarray, "N K"]:
    """Indices of each point's ``count`` nearest other points (nearest first; ``K = min(count,
    N - 1)``)."""
    n = len(points)
    k = min(count, n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    out = np.zeros((n, k), np.int64)
    for lo in range(0, n, chunk):
        block = points[lo : lo + chunk]
        dist = np.sum(np.square(block[:, None, :] - points[None, :, :]), axis=-1)
        dist[np.arange(len(block)), np.arange(lo, lo + len(block))] = np.inf  # not itself
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1)
        out[lo : lo + len(block)] = np.take_along_axis(part, order, axis=1)
    return out


@dataclasses.dataclass(frozen=True)
class LucasKanadeTracker:
    """Pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) implementing ``PointTracker``.

    ``win_size`` is the square window in pixels at each pyramid level, ``max_level`` the number
    of pyramid levels above the full image, ``fb_threshold_px`` the largest forward-backward
    round-trip error (pixels) and ``min_ncc`` the smallest normalised cross-correlation with the
    query-frame patch (``ncc_radius`` pixels around the point; ``min_ncc=-1`` turns the check
    off) for a point to stay visible. ``neighbors`` is how many nearby tracked points give a
    lost point its step (0: a lost point keeps Lucas-Kanade's estimate of the step where it is
    lost, then holds still unless ``relocate``). With
    ``relocate=False`` (default) a point that fails a check once stays not visible for the rest
    of the pass (LK cannot tell a point re-appearing from a point that slid onto an occluder);
    with ``relocate=True`` it counts as visible again whenever the checks pass.

    The defaults were chosen on rendered kitchen videos with ground truth and the real
    bridge_spoon episode (docs/extraction.md): a small window keeps a point near an object's
    edge from being held by the still background behind it.
    """

    win_size: int = 7
    max_level: int = 3
    fb_threshold_px: float = 0.5
    min_ncc: float = 0.5
    ncc_radius: int = 4
    neighbors: int = 8
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
        if not -1.0 <= self.min_ncc <= 1.0:
            raise ConfigError(f"min_ncc must be in [-1, 1], got {self.min_ncc}")
        if self.ncc_radius < 1:
            raise ConfigError(f"ncc_radius must be >= 1, got {self.ncc_radius}")
        if self.neighbors < 0:
            raise ConfigError(f"neighbors must be >= 0, got {self.neighbors}")

    def _lk(self, img0: np.ndarray, img1: np.ndarray, pts: np.ndarray):
        criteria = (
            cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
            self.max_iterations,
            self.epsilon,
        )
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(
            img0,
            img1,
            np.ascontiguousarray(pts.reshape(-1, 1, 2), np.float32),
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

    def _pass(
        self,
        gray: list[np.ndarray],
        grayf: list[np.ndarray],
        start: np.ndarray,
        q_t: int,
        direction: int,
        candidates: np.ndarray,
        template: np.ndarray | None,
    ):
        """Track ``start`` (query frame ``q_t``) to one end of the video; yield (t, pts, ok)."""
        t_len = len(gray)
        h, w = gray[0].shape
        pts = start.copy()
        alive = np.ones(len(start), bool)
        t = q_t
        while 0 <= t + direction < t_len:
            new = pts.copy()
            ok = np.zeros(len(pts), bool)
            # Without relocation a lost point is never measured again: only track live ones.
            run = np.ones(len(pts), bool) if self.relocate else alive
            if run.any():
                stepped, ok_run = self._step(gray[t], gray[t + direction], pts[run], (w, h))
                if template is not None:
                    seen = patches(grayf[t + direction], stepped, self.ncc_radius)
                    ok_run &= normalized_cross_correlation(template[run], seen) >= self.min_ncc
                new[run] = stepped
                ok[run] = ok_run
            lost = np.flatnonzero(~ok)
            if len(lost):
                step = np.zeros((len(lost), 2), np.float32)  # hold still by default
                if self.neighbors and ok.any() and candidates.shape[1]:
                    cand = candidates[lost]
                    usable = ok[cand]
                    usable &= np.cumsum(usable, axis=1) <= self.neighbors
                    has = usable.any(axis=1)
                    if has.any():
                        moves = (new - pts)[cand[has]]  # [L, K, 2]
                        masked = np.where(usable[has][..., None], moves, np.nan)
                        step[has] = np.nanmedian(masked, axis=1)
                elif self.neighbors == 0:
                    step = new[lost] - pts[lost]  # Lucas-Kanade's own (unchecked) estimate
                new[lost] = pts[lost] + step
            t += direction
            if not self.relocate:
                alive &= ok
                ok = alive.copy()
            pts = new
            yield t, pts, ok

    def track(
        self, video: UInt8[np.ndarray, "T H W 3"], queries: Float[np.ndarray, "N 3"]
    ) -> TrackResult:
        """Track ``queries`` ``(t, y, x)`` through ``video``; tracks ``[N, T, 2]`` as ``(x, y)``."""
        video, queries = check_track_inputs(video, queries)
        t_len = video.shape[0]
        n = queries.shape[0]
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video]
        grayf = [g.astype(np.float32) for g in gray] if self.min_ncc > -1.0 else []
        tracks = np.zeros((n, t_len, 2), np.float32)
        visible = np.zeros((n, t_len), bool)
        q_frames = queries[:, 0].astype(np.int64)
        for q_t in np.unique(q_frames):
            idx = np.flatnonzero(q_frames == q_t)
            start = (queries[idx][:, [2, 1]] - 0.5).astype(np.float32)  # OpenCV (x, y)
            tracks[idx, q_t] = start
            visible[idx, q_t] = True
            candidates = (
                neighbor_candidates(start, _CANDIDATES * self.neighbors)
                if self.neighbors
                else np.zeros((len(idx), 0), np.int64)
            )
            template = patches(grayf[q_t], start, self.ncc_radius) if grayf else None
            for direction in (1, -1):
                for t, pts, ok in self._pass(
                    gray, grayf, start, int(q_t), direction, candidates, template
                ):
                    tracks[idx, t] = pts
                    visible[idx, t] = ok
        return TrackResult(tracks=tracks + 0.5, visible=visible)


__all__ = [
    "LucasKanadeTracker",
    "neighbor_candidates",
    "normalized_cross_correlation",
    "patches",
]
