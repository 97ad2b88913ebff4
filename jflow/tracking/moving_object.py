"""Moving-object detection (3DFlowAction section 3.1).

A regular grid of query points covers the first frame; points inside the gripper (or hand)
mask are left out so that the robot itself is not taken for the manipulated object. The points
are tracked, camera motion is removed (optional, :mod:`jflow.tracking.camera_motion`), and a
point "moves" when its largest displacement from its first-frame position, over the frames where
it is visible, exceeds ``motion_threshold_px``. Moving points are grouped into clusters on the
query grid (points at most ``link_cells`` cells apart are linked) and only the largest cluster
is kept: isolated glitches (LK sliding along an edge of a textureless surface) are dropped, and
one object is returned. The moving object's box is the bounding box of the first-frame
positions of the kept points.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from jaxtyping import Bool, Float, UInt8

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.tracking.camera_motion import estimate_camera_motion, remove_camera_motion
from jflow.tracking.interface import PointTracker, TrackResult


@dataclasses.dataclass(frozen=True)
class MovingObject:
    """The result of :func:`detect_moving_object`.

    ``queries`` ``[N, 3]`` are the grid queries ``(t, y, x)`` that were tracked (gripper points
    already left out), ``result`` their tracks, ``stabilized`` the tracks ``[N, T, 2]`` after
    camera-motion removal, ``displacement`` ``[N]`` each point's largest motion in pixels,
    ``moving`` ``[N]`` the points kept as moving, ``box_xyxy`` their first-frame bounding box and
    ``camera_transforms`` ``[T, 3, 3]`` the fitted ``ref_from_t`` pixel transforms.
    """

    box_xyxy: Float[np.ndarray, " 4"]
    queries: Float[np.ndarray, "N 3"]
    result: TrackResult
    stabilized: Float[np.ndarray, "N T 2"]
    displacement: Float[np.ndarray, " N"]
    moving: Bool[np.ndarray, " N"]
    camera_transforms: Float[np.ndarray, "T 3 3"]


def full_frame_grid(
    height: int, width: int, grid_hw: tuple[int, int]
) -> tuple[Float[np.ndarray, "GH GW 2"], tuple[int, int]]:
    """Cell centres ``(x, y)`` of a ``grid_hw`` grid over a whole ``width x height`` image."""
    gh, gw = grid_hw
    if gh < 2 or gw < 2:
        raise ConfigError(f"the detection grid must be at least 2x2, got {grid_hw}")
    xs = (np.arange(gw) + 0.5) * width / gw
    ys = (np.arange(gh) + 0.5) * height / gh
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return np.stack([gx, gy], axis=-1).astype(np.float32), (gh, gw)


def check_mask(mask: np.ndarray, hw: tuple[int, int], name: str) -> np.ndarray:
    """A mask as ``bool [H, W]`` (any nonzero value is in), or :class:`ShapeError`."""
    mask = np.asarray(mask)
    if mask.shape != hw:
        raise ShapeError(f"{name} must be [H, W] = {hw}, got shape {mask.shape}")
    return mask > 0


def detect_moving_object(
    video: UInt8[np.ndarray, "T H W 3"],
    tracker: PointTracker,
    gripper_mask: Bool[np.ndarray, "H W"] | None = None,
    grid_hw: tuple[int, int] = (32, 32),
    motion_threshold_px: float = 10.0,
    min_moving_points: int = 8,
    camera_model: str = "none",
    gripper_dilation_px: int = 0,
    link_cells: int = 1,
) -> MovingObject:
    """Find the moving object of a video: see the module docstring.

    ``gripper_mask`` ``[H, W]`` (nonzero = gripper, on frame 0) removes queries inside it,
    after dilating it by ``gripper_dilation_px``. Moving points within ``link_cells`` grid cells
    of each other form a cluster; only the largest cluster is kept. Raises :class:`DataError` when fewer than
    ``min_moving_points`` points move (e.g. only the masked gripper moved).
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ShapeError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    t_len, h, w = video.shape[:3]
    if t_len < 2:
        raise ShapeError(f"moving-object detection needs at least 2 frames, got {t_len}")
    if motion_threshold_px <= 0:
        raise ConfigError(f"motion_threshold_px must be > 0, got {motion_threshold_px}")
    grid, (gh, gw) = full_frame_grid(h, w, grid_hw)
    keep = np.ones((gh, gw), bool)
    if gripper_mask is not None:
        mask = check_mask(gripper_mask, (h, w), "gripper_mask")
        if gripper_dilation_px > 0:
            k = 2 * gripper_dilation_px + 1
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        cols = np.clip(grid[..., 0].astype(int), 0, w - 1)
        rows = np.clip(grid[..., 1].astype(int), 0, h - 1)
        keep = ~mask[rows, cols]
    pts = grid[keep]
    if len(pts) < min_moving_points:
        raise DataError(f"the gripper mask covers all but {len(pts)} of the {gh * gw} queries")
    queries = np.concatenate([np.zeros((len(pts), 1), np.float32), pts[:, ::-1]], axis=1)
    result = tracker.track(video, queries)
    transforms = estimate_camera_motion(result.tracks, result.visible, (w, h), model=camera_model)
    stabilized = remove_camera_motion(result.tracks, transforms)
    offsets = np.linalg.norm(stabilized - stabilized[:, :1], axis=-1)
    displacement = np.where(result.visible, offsets, 0.0).max(axis=1)

    moving_grid = np.zeros((gh, gw), bool)
    moving_grid[keep] = displacement > motion_threshold_px
    moving = largest_cluster(moving_grid, link_cells)[keep]
    if moving.sum() < min_moving_points:
        raise DataError(
            f"too few moving points: {int(moving.sum())} of {len(pts)} queries moved more than "
            f"{motion_threshold_px} px (need {min_moving_points}); nothing in the video moves "
            "enough, or only the masked gripper moved"
        )
    first = stabilized[moving, 0]
    box = np.array(
        [first[:, 0].min(), first[:, 1].min(), first[:, 0].max(), first[:, 1].max()], np.float32
    )
    return MovingObject(
        box_xyxy=box,
        queries=queries,
        result=result,
        stabilized=stabilized,
        displacement=displacement,
        moving=moving,
        camera_transforms=transforms,
    )


def largest_cluster(
    cells: Bool[np.ndarray, "GH GW"], link_cells: int = 1
) -> Bool[np.ndarray, "GH GW"]:
    """The cells of the largest group of ``True`` cells, linking cells ``link_cells`` apart."""
    cells = np.asarray(cells, bool)
    if not cells.any():
        return cells
    k = 2 * link_cells + 1
    linked = cv2.dilate(cells.astype(np.uint8), np.ones((k, k), np.uint8))
    count, labels = cv2.connectedComponents(linked, connectivity=8)
    sizes = np.bincount(labels[cells], minlength=count)
    sizes[0] = 0
    return cells & (labels == int(np.argmax(sizes)))


def box_iou(a: Float[np.ndarray, " 4"], b: Float[np.ndarray, " 4"]) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


__all__ = [
    "MovingObject",
    "box_iou",
    "check_mask",
    "detect_moving_object",
    "full_frame_grid",
    "largest_cluster",
]
