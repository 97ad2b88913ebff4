"""Does a predicted flow move the object in the instructed direction?

For tasks that exist in a forward and a reverse version (open/close, turn on/off, the kettle
moved there and back), an instruction fixes the direction of the motion. A prediction moves in
the instructed direction when its *mean displacement* ``mean_n (p_{T-1,n} - p_{0,n})`` over the
points visible in the first frame (the points known at inference time; all points when none is)
has a positive cosine with the ground truth's mean displacement over the same points. A
prediction that does not move has cosine 0 and does not count as correct. Episodes whose
ground-truth mean displacement is shorter than a threshold (a knob turning about its own axis
barely moves its points' mean) have no direction and are left out.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float

from jflow.errors import ShapeError


def paired_task_ids() -> frozenset[str]:
    """Tasks that have a registered reverse (``Task.reverse_of``) or are one."""
    from jflow.sim.tasks import TASKS

    ids = {t.task_id for t in TASKS if t.reverse_of is not None}
    ids |= {t.reverse_of for t in TASKS if t.reverse_of is not None}
    return frozenset(ids)


def direction_mask(visible: Bool[np.ndarray, "T N"]) -> Bool[np.ndarray, " N"]:
    """The points the direction is measured on: those visible in the first frame (all when
    none is)."""
    first = np.asarray(visible, bool)[0]
    return first if first.any() else np.ones_like(first)


def mean_displacement(
    points: Float[np.ndarray, "T N 3"], mask: Bool[np.ndarray, " N"]
) -> Float[np.ndarray, " 3"]:
    """``mean over masked n of (points[-1, n] - points[0, n])`` (meters)."""
    points = np.asarray(points, np.float64)
    mask = np.asarray(mask, bool)
    if points.ndim != 3 or points.shape[-1] != 3 or mask.shape != points.shape[1:2]:
        raise ShapeError(f"need points [T, N, 3] and mask [N], got {points.shape}, {mask.shape}")
    if not mask.any():
        raise ShapeError("the direction mask selects no point")
    return (points[-1] - points[0])[mask].mean(axis=0)


def direction_cosine(
    pred_points: Float[np.ndarray, "T N 3"],
    gt_points: Float[np.ndarray, "T N 3"],
    mask: Bool[np.ndarray, " N"],
) -> float:
    """Cosine between predicted and ground-truth mean displacements (0 when either is zero)."""
    a = mean_displacement(pred_points, mask)
    b = mean_displacement(gt_points, mask)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return 0.0
    return float(a @ b / (na * nb))


__all__ = [
    "direction_cosine",
    "direction_mask",
    "mean_displacement",
    "paired_task_ids",
]
