"""3D flow errors: average and final displacement error (ADE, FDE) in meters.

Flows are ``[T, N, 3]`` point arrays in one frame (camera or world) and visibility ``[T, N]``.
ADE is the mean Euclidean distance between predicted and ground-truth points over every
``(t, n)`` where the ground truth is visible; FDE the mean distance at the last frame over the
points visible there.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Bool, Float

from jflow.errors import DataError, ShapeError


@dataclasses.dataclass(frozen=True)
class FlowErrors:
    """ADE and FDE in meters, and how many point-frames / final points they average."""

    ade: float
    fde: float
    num_visible: int
    num_final: int


def flow_errors(
    pred_points: Float[np.ndarray, "T N 3"],
    gt_points: Float[np.ndarray, "T N 3"],
    visible: Bool[np.ndarray, "T N"],
) -> FlowErrors:
    """ADE/FDE of ``pred_points`` against ``gt_points`` over the visible points (meters).

    Raises :class:`ShapeError` for mismatched shapes or non-finite visible points, and
    :class:`DataError` when no point is visible (or none at the last frame).
    """
    pred = np.asarray(pred_points, np.float64)
    gt = np.asarray(gt_points, np.float64)
    vis = np.asarray(visible, bool)
    if gt.ndim != 3 or gt.shape[-1] != 3 or pred.shape != gt.shape:
        raise ShapeError(f"points must both be [T, N, 3], got {pred.shape} and {gt.shape}")
    if vis.shape != gt.shape[:2]:
        raise ShapeError(f"visible must be [T, N] = {gt.shape[:2]}, got {vis.shape}")
    if not (np.all(np.isfinite(pred[vis])) and np.all(np.isfinite(gt[vis]))):
        raise ShapeError("points contain NaN or inf where they are visible")
    if not vis.any():
        raise DataError("no visible point to measure flow errors on")
    if not vis[-1].any():
        raise DataError("no point is visible at the last frame: FDE is undefined")
    dist = np.linalg.norm(pred - gt, axis=-1)
    return FlowErrors(
        ade=float(dist[vis].mean()),
        fde=float(dist[-1][vis[-1]].mean()),
        num_visible=int(vis.sum()),
        num_final=int(vis[-1].sum()),
    )


__all__ = ["FlowErrors", "flow_errors"]
