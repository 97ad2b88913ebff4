"""TAP-Vid point-tracking metrics (Doersch et al., 2022): average Jaccard, <delta^x_avg, OA.

All positions are ``(x, y)`` pixels, tracks ``[N, T, 2]``, occlusion flags ``[N, T]`` (``True`` =
occluded), query points ``[N, 3]`` as ``(t, y, x)``: the tracker interface's layouts. Distances
are measured after rescaling both tracks to a 256x256 frame, as the benchmark does.

Which frames count depends on how the queries were chosen:

- ``"first"``: each track is queried at its first visible frame and only frames *after* the
  query frame are evaluated;
- ``"strided"``: tracks are queried every 5 frames where visible (one query per track and
  query frame) and every frame *except* the query frame is evaluated.

For each threshold ``d`` in 1, 2, 4, 8, 16 px: ``pts_within_d`` is the fraction of
ground-truth-visible evaluated points predicted within ``d`` (strictly closer), ignoring the
predicted occlusion; ``jaccard_d = TP / (TP + FN + FP)`` where a true positive is visible,
predicted visible and within ``d``; ``FN`` a visible point predicted occluded or farther than
``d``; ``FP`` a point predicted visible that is occluded or farther than ``d``.
``occlusion_accuracy`` is the fraction of evaluated points whose occlusion is predicted right.
``average_jaccard`` and ``average_pts_within_thresh`` (<delta^x_avg) average over thresholds.
``num_evaluated`` and ``num_visible`` count the evaluated point-frames and those visible in the
ground truth. When the ground truth shows no evaluated point (all occluded), every
``pts_within_*`` and ``jaccard_*`` is 0.0 by convention (never NaN): check ``num_visible``.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int

from jflow.errors import ConfigError, ShapeError

TAPVID_THRESHOLDS = (1, 2, 4, 8, 16)
QUERY_MODES = ("first", "strided")
EVAL_SIZE = 256


def evaluation_frames(
    query_frames: Int[np.ndarray, " N"], num_frames: int, query_mode: str
) -> Bool[np.ndarray, "N T"]:
    """Which frames of each track are evaluated (see the module docstring)."""
    if query_mode not in QUERY_MODES:
        raise ConfigError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
    frames = np.arange(num_frames)[None, :]
    q = np.asarray(query_frames).round().astype(np.int64)[:, None]
    return frames > q if query_mode == "first" else frames != q


def _check(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr


def tapvid_metrics(
    query_points: Float[np.ndarray, "N 3"],
    gt_occluded: Bool[np.ndarray, "N T"],
    gt_tracks: Float[np.ndarray, "N T 2"],
    pred_occluded: Bool[np.ndarray, "N T"],
    pred_tracks: Float[np.ndarray, "N T 2"],
    query_mode: str,
    image_size: tuple[int, int] = (EVAL_SIZE, EVAL_SIZE),
) -> dict[str, float]:
    """TAP-Vid metrics of one video; ``image_size`` ``(width, height)`` of the tracks' frames.

    Tracks at another resolution are rescaled to 256x256 before distances are taken. Raises
    :class:`ShapeError` for mismatched shapes and :class:`ConfigError` for a bad query mode or
    no evaluated point.
    """
    gt_tracks = np.asarray(gt_tracks, np.float64)
    if gt_tracks.ndim != 3 or gt_tracks.shape[-1] != 2:
        raise ShapeError(f"gt_tracks must be [N, T, 2], got shape {gt_tracks.shape}")
    n, t_len = gt_tracks.shape[:2]
    query_points = _check("query_points", query_points, (n, 3))
    gt_occ = _check("gt_occluded", gt_occluded, (n, t_len)).astype(bool)
    pred_occ = _check("pred_occluded", pred_occluded, (n, t_len)).astype(bool)
    pred_tracks = _check("pred_tracks", pred_tracks, (n, t_len, 2)).astype(np.float64)
    if not np.all(np.isfinite(pred_tracks[~pred_occ])):
        raise ShapeError("pred_tracks contain NaN or inf at points predicted visible")
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    scale = np.array([EVAL_SIZE / width, EVAL_SIZE / height])
    evaluate = evaluation_frames(query_points[:, 0], t_len, query_mode)
    if not evaluate.any():
        raise ConfigError("no frame is evaluated: every query is at the last frame")
    visible = ~gt_occ
    pred_visible = ~pred_occ
    metrics = {
        "occlusion_accuracy": float(np.sum((pred_occ == gt_occ) & evaluate) / np.sum(evaluate)),
        "num_evaluated": float(np.sum(evaluate)),
        "num_visible": float(np.sum(visible & evaluate)),
    }
    dist2 = np.sum(np.square((np.nan_to_num(pred_tracks) - gt_tracks) * scale), axis=-1)
    gt_positives = np.sum(visible & evaluate)
    jaccards, withins = [], []
    for thresh in TAPVID_THRESHOLDS:
        within = dist2 < thresh**2
        correct = within & visible
        frac = np.sum(correct & evaluate) / gt_positives if gt_positives else 0.0
        tp = np.sum(correct & pred_visible & evaluate)
        fp = np.sum(((~visible) | (~within)) & pred_visible & evaluate)
        denom = gt_positives + fp
        jac = tp / denom if denom else 0.0
        metrics[f"pts_within_{thresh}"] = float(frac)
        metrics[f"jaccard_{thresh}"] = float(jac)
        withins.append(frac)
        jaccards.append(jac)
    metrics["average_jaccard"] = float(np.mean(jaccards))
    metrics["average_pts_within_thresh"] = float(np.mean(withins))
    return metrics


def sample_queries_first(
    gt_occluded: Bool[np.ndarray, "N T"], gt_tracks: Float[np.ndarray, "N T 2"]
) -> tuple[Float[np.ndarray, "M 3"], Int[np.ndarray, " M"]]:
    """Queries ``(t, y, x)`` at each track's first visible frame, and the track of each query.

    Tracks that are never visible get no query.
    """
    occ = np.asarray(gt_occluded, bool)
    tracks = np.asarray(gt_tracks)
    idx = np.flatnonzero((~occ).any(axis=1))
    t = np.argmax(~occ[idx], axis=1)
    xy = tracks[idx, t]
    return np.stack([t, xy[:, 1], xy[:, 0]], axis=1).astype(np.float32), idx


def sample_queries_strided(
    gt_occluded: Bool[np.ndarray, "N T"], gt_tracks: Float[np.ndarray, "N T 2"], stride: int = 5
) -> tuple[Float[np.ndarray, "M 3"], Int[np.ndarray, " M"]]:
    """Queries every ``stride`` frames (0, 5, 10, ...) at each track visible there.

    Returns the queries and, for each, the index of its ground-truth track (a track queried at
    several frames is evaluated once per query).
    """
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    occ = np.asarray(gt_occluded, bool)
    tracks = np.asarray(gt_tracks)
    queries, index = [], []
    for t in range(0, occ.shape[1], stride):
        idx = np.flatnonzero(~occ[:, t])
        xy = tracks[idx, t]
        queries.append(np.stack([np.full(len(idx), t), xy[:, 1], xy[:, 0]], axis=1))
        index.append(idx)
    return np.concatenate(queries).astype(np.float32), np.concatenate(index)


__all__ = [
    "EVAL_SIZE",
    "QUERY_MODES",
    "TAPVID_THRESHOLDS",
    "evaluation_frames",
    "sample_queries_first",
    "sample_queries_strided",
    "tapvid_metrics",
]
