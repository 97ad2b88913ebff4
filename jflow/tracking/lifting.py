"""Lifting 2D tracks to 3D: depth alignment, per-point depth, unprojection, temporal filtering.

Depth is metric depth along the optical axis (docs/conventions.md). A sensor's depth is used as
it is. A relative or monocular depth ``d`` is first aligned to a metric reference depth on the
first frame, as Dream2Flow (section 4.2) calibrates video depth: ``Z = s * d + b`` with the
global ``s, b`` of a least-squares fit over the object's pixels (``b = 0`` when only a scale is
fitted).

Invalid depth (0, negative, NaN or inf) never becomes NaN: the point is marked not visible in
that frame, and its stored depth is filled from the nearest valid frame of the same point (0
when it has none), so every array stays finite. A point that sits on a depth edge (the four
depths of its bilinear sample differ by more than ``max_depth_step`` times the nearest of them)
is treated the same way: bilinear depth across an edge is a "flying pixel" between the object
and what lies behind it. Measured on rendered kitchen videos (ground-truth tracks lifted with
the rendered depth, 18 episodes at 256x256): mean 3D error 5.8 mm without the test, 1.5 mm with
it (``max_depth_step=0.05``), keeping 91 % of the visible point-frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Bool, Float

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics, sample_depth, unproject

_sample_depth_video = jax.jit(jax.vmap(sample_depth))
_unproject = jax.jit(unproject)


def valid_depth(depth: np.ndarray, min_depth: float = 1e-6) -> np.ndarray:
    """Where a depth map holds a usable value: finite and greater than ``min_depth``."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > min_depth)


def align_depth(
    relative: Float[np.ndarray, "H W"],
    reference: Float[np.ndarray, "H W"],
    mask: Bool[np.ndarray, "H W"],
    with_shift: bool = True,
) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` with ``scale * relative + shift ~= reference`` on ``mask``.

    Only pixels where the mask is set, ``reference`` is valid and ``relative`` is finite count.
    ``with_shift=False`` fits a scale alone (``shift = 0``). Raises :class:`ShapeError` for
    mismatched shapes and :class:`DataError` for an empty mask or too few valid pixels.
    """
    relative = np.asarray(relative, np.float64)
    reference = np.asarray(reference, np.float64)
    mask = np.asarray(mask)
    if relative.ndim != 2 or relative.shape != reference.shape or mask.shape != relative.shape:
        raise ShapeError(
            "relative depth, reference depth and mask must be [H, W] of one size, got "
            f"{relative.shape}, {reference.shape} and {mask.shape}"
        )
    if not mask.any():
        raise DataError("depth alignment: the object mask is empty")
    use = (mask > 0) & valid_depth(reference) & np.isfinite(relative)
    need = 2 if with_shift else 1
    if use.sum() < need + 1:
        raise DataError(
            f"depth alignment: only {int(use.sum())} object pixels have valid depth in both maps"
        )
    d = relative[use]
    z = reference[use]
    if with_shift:
        design = np.stack([d, np.ones_like(d)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, z, rcond=None)
    else:
        scale, shift = float(d @ z / (d @ d)), 0.0
    if not (np.isfinite(scale) and np.isfinite(shift)) or abs(scale) < 1e-12:
        raise DataError(f"depth alignment is degenerate (scale {scale}, shift {shift})")
    return float(scale), float(shift)


def fill_invalid(
    values: Float[np.ndarray, "T N"], valid: Bool[np.ndarray, "T N"]
) -> Float[np.ndarray, "T N"]:
    """Replace invalid entries by the value of the nearest valid frame of the same point (or 0)."""
    values = np.asarray(values, np.float32)
    valid = np.asarray(valid, bool)
    t_len = values.shape[0]
    out = np.where(valid, values, 0.0).astype(np.float32)
    times = np.arange(t_len)
    for n in np.flatnonzero(~valid.all(axis=0) & valid.any(axis=0)):
        good = np.flatnonzero(valid[:, n])
        nearest = good[np.abs(times[:, None] - good[None, :]).argmin(axis=1)]
        out[:, n] = values[nearest, n]
    return out


def temporal_median(
    depth: Float[np.ndarray, "T N"], valid: Bool[np.ndarray, "T N"], window: int = 5
) -> Float[np.ndarray, "T N"]:
    """Per-point running median of depth over a centred window of ``window`` frames.

    Only valid samples enter each median; an entry whose window has no valid sample keeps its
    value. ``window`` must be odd; 1 returns the input.
    """
    depth = np.asarray(depth, np.float32)
    valid = np.asarray(valid, bool)
    if window < 1 or window % 2 == 0:
        raise ConfigError(f"the median window must be an odd number of frames, got {window}")
    if window == 1:
        return depth.copy()
    half = window // 2
    t_len = depth.shape[0]
    out = depth.copy()
    masked = np.where(valid, depth, np.nan)
    for t in range(t_len):
        chunk = masked[max(0, t - half) : t + half + 1]
        has = np.isfinite(chunk).any(axis=0)
        if has.any():
            out[t, has] = np.nanmedian(chunk[:, has], axis=0)
    return out


def depth_edges(
    depth_video: Float[np.ndarray, "T H W"],
    tracks: Float[np.ndarray, "T N 2"],
    max_depth_step: float,
) -> Bool[np.ndarray, "T N"]:
    """Where a track's bilinear depth sample straddles a depth edge: ``True`` when the valid
    depths among the (non-zero-weight) four pixel centres around ``(x, y)`` differ by more than
    ``max_depth_step`` times the smallest of them. Pixel convention of docs/conventions.md."""
    depth_video = np.asarray(depth_video, np.float32)
    tracks = np.asarray(tracks, np.float32)
    t_len, h, w = depth_video.shape
    u = np.clip(np.nan_to_num(tracks[..., 0] - 0.5), 0.0, w - 1.0)
    v = np.clip(np.nan_to_num(tracks[..., 1] - 0.5), 0.0, h - 1.0)
    u0 = np.clip(np.floor(u), 0, max(w - 2, 0)).astype(np.int64)
    v0 = np.clip(np.floor(v), 0, max(h - 2, 0)).astype(np.int64)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    du, dv = u - u0, v - v0
    t = np.arange(t_len)[:, None]
    corners = np.stack(
        [
            depth_video[t, v0, u0],
            depth_video[t, v0, u1],
            depth_video[t, v1, u0],
            depth_video[t, v1, u1],
        ],
        axis=-1,
    )
    weights = np.stack([(1 - du) * (1 - dv), du * (1 - dv), (1 - du) * dv, du * dv], axis=-1)
    use = (weights > 0) & valid_depth(corners)
    high = np.where(use, corners, -np.inf).max(axis=-1)
    low = np.where(use, corners, np.inf).min(axis=-1)
    with np.errstate(invalid="ignore"):
        return use.any(axis=-1) & (high - low > max_depth_step * low)


def lift_tracks(
    tracks: Float[np.ndarray, "T N 2"],
    visible: Bool[np.ndarray, "T N"],
    depth_video: Float[np.ndarray, "T H W"],
    intrinsics: PinholeIntrinsics,
    median_window: int = 1,
    max_depth_step: float | None = 0.05,
    max_depth_m: float | None = None,
) -> ObjectFlow:
    """Lift pixel tracks ``(x, y)`` to a camera-frame :class:`ObjectFlow` with a metric depth video.

    Each point's depth is sampled bilinearly (:func:`jflow.geometry.camera.sample_depth`); a
    point whose depth is invalid in a frame, or that lies on a depth edge (:func:`depth_edges`
    with ``max_depth_step``, relative; ``None`` turns the test off), is marked not visible
    there. ``max_depth_m`` is a range limit: larger depths count as no measurement (a
    renderer's far plane where no surface is, 333 m in the kitchen, is not a depth).
    ``median_window > 1`` smooths each point's depth over time (:func:`temporal_median`)
    before unprojection.
    """
    tracks = np.asarray(tracks, np.float32)
    visible = np.asarray(visible, bool)
    depth_video = np.asarray(depth_video, np.float32)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ShapeError(f"tracks must be [T, N, 2], got shape {tracks.shape}")
    t_len, n = tracks.shape[:2]
    if visible.shape != (t_len, n):
        raise ShapeError(f"visible must be [T, N] = {(t_len, n)}, got {visible.shape}")
    hw = (intrinsics.height, intrinsics.width)
    if depth_video.shape != (t_len, *hw):
        raise ShapeError(
            f"depth video must be [T, H, W] = {(t_len, *hw)} to match the tracks and the "
            f"intrinsics, got {depth_video.shape}"
        )
    if max_depth_m is not None:
        if not max_depth_m > 0:
            raise ConfigError(f"max_depth_m must be > 0 or None, got {max_depth_m}")
        depth_video = np.where(depth_video > max_depth_m, 0.0, depth_video).astype(np.float32)
    d, v = _sample_depth_video(jnp.asarray(depth_video), jnp.asarray(tracks))
    depth, ok = np.array(d, np.float32), np.asarray(v, bool)
    if max_depth_step is not None:
        if not max_depth_step > 0:
            raise ConfigError(f"max_depth_step must be > 0 or None, got {max_depth_step}")
        ok = ok & ~depth_edges(depth_video, tracks, max_depth_step)
    vis = visible & ok
    if median_window > 1:
        depth = temporal_median(depth, vis, median_window)
    depth = fill_invalid(depth, vis)
    points = np.asarray(_unproject(jnp.asarray(tracks), jnp.asarray(depth), intrinsics), np.float32)
    return ObjectFlow(points=points, visible=vis, tracks=tracks, depth=depth, frame="camera")


__all__ = [
    "align_depth",
    "depth_edges",
    "fill_invalid",
    "lift_tracks",
    "temporal_median",
    "valid_depth",
]
