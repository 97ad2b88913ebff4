"""Moving-object detection (3DFlowAction section 3.1).

A regular grid of query points covers the first frame; points inside the gripper (or hand)
mask are left out so that the robot itself is not taken for the manipulated object. The points
are tracked, camera motion is removed (optional, :mod:`jflow.tracking.camera_motion`), and each
point's *displacement* is its largest motion from its first-frame position over the frames
where the tracker sees it.

**What moves significantly.** A point moves when its displacement exceeds
``max(motion_threshold_px, noise_factor * noise)``, where ``noise`` is the median displacement
of all grid points: most of a frame is still background, so the median measures how much the
tracker wanders on still things (0.00 px on rendered kitchen videos, 0.42 px on the real
bridge_spoon episode, whose threshold is therefore 6.7 px; default tracker settings). Moving points are grouped into
clusters on the query grid (points at most ``link_cells`` cells apart are linked) and the
largest cluster is the moving object if it is *significant*: it holds at least
``min_moving_fraction`` of the queries, or it holds at least ``lone_cluster_share`` of all the
moving points (nothing else in the video moves, so even a small cluster is real). Scattered
tracker glitches (points sliding along edges in real video) form many small clusters, none
significant. ``min_moving_points`` is an absolute floor on the cluster size.

**The box.** With ``refine_stride_px > 0`` the cluster's region (its grid cells, grown by one
cell) is re-sampled with queries every ``refine_stride_px`` pixels, which are tracked; those
that move more than the threshold and more than ``refine_motion_ratio`` times the median
displacement of the cluster's points form the box (largest cluster on the fine grid again).
The ratio drops background points that the object drags a little before they are found
occluded. The box is the union of the grid cells (``(x, y)`` pixels, corners at integers) of
the kept points on the first frame (their query positions, never later positions).

**Change checks in the box stage.** A tracker that follows an edge drags the still pixels
beside it along (its window holds the moving edge; on a flat, untextured surface nothing holds
it back), so a fine point's motion is kept only if the pixel where it starts changes too:

* *still*: a point whose starting pixel never changes, neither in colour (the largest change of
  any channel from frame 0, bilinear at the point, at most ``still_change`` grey levels, or
  twice the median change of the frame's pixels where that is larger: real video flickers)
  nor in depth, did not move, whatever the tracker says: something that leaves a pixel
  changes it.

With a metric ``depth`` video ``[T, H, W]`` two depth cues are added (depth changes are
relative to frame 0's depth, at least ``depth_change``, or twice the median change of the
frame's pixels where that is larger; invalid depth is no evidence):

* *left behind*: a pixel whose depth grows (the surface there went away: a still surface can
  only be covered, which brings the depth nearer) was on the moving object on frame 0. Such
  pixels in the box stage's region are added to the box. This finds a small part that turns
  out of the image plane (a light switch's lever), which the tracker loses at once because
  its appearance changes;
* *dragged*: a point that starts on the far side of a depth edge (a pixel nearer by
  ``depth_edge_step`` of its depth lies within ``edge_radius_px``) and whose pixel is later
  covered (its depth comes nearer) is the background the nearer object slides over, not the
  object, however the tracker moves it.

Measured on the 18 human kitchen episodes (256 px, 16 frames): box IoU >= 0.5 on 18 of 18 with
depth (the light switch's lever at 0.66-0.86), 15 of 18 without (docs/extraction.md).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from jaxtyping import Bool, Float, UInt8

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.tracking.camera_motion import estimate_camera_motion, remove_camera_motion
from jflow.tracking.interface import PointTracker, TrackResult
from jflow.tracking.lifting import valid_depth


@dataclasses.dataclass(frozen=True)
class MotionScan:
    """What moved in a video: the grid stage of :func:`detect_moving_object`.

    ``queries`` ``[N, 3]`` are the grid queries ``(t, y, x)`` that were tracked (gripper points
    already left out) on a ``grid_hw`` grid whose cells are ``cell_xy`` pixels, ``cells``
    ``[N, 2]`` their ``(row, col)``, ``result`` their tracks, ``stabilized`` the tracks
    ``[N, T, 2]`` after camera-motion removal, ``displacement`` ``[N]`` each point's largest
    motion in pixels, ``noise_px`` the median displacement, ``threshold_px`` the motion
    threshold used, ``moving`` ``[N]`` the points over it, ``cluster`` ``[N]`` the largest
    cluster of moving points, ``significant`` whether that cluster is the moving object (see the
    module docstring) and ``camera_transforms`` ``[T, 3, 3]`` the fitted ``ref_from_t``
    transforms.
    """

    queries: Float[np.ndarray, "N 3"]
    cells: np.ndarray
    grid_hw: tuple[int, int]
    cell_xy: tuple[float, float]
    result: TrackResult
    stabilized: Float[np.ndarray, "N T 2"]
    displacement: Float[np.ndarray, " N"]
    noise_px: float
    threshold_px: float
    moving: Bool[np.ndarray, " N"]
    cluster: Bool[np.ndarray, " N"]
    significant: bool
    camera_transforms: Float[np.ndarray, "T 3 3"]

    def summary(self) -> str:
        """One line: thresholds and counts (used in error messages and reports)."""
        return (
            f"{int(self.moving.sum())} of {len(self.queries)} grid queries moved more than "
            f"{self.threshold_px:.1f} px (tracking noise {self.noise_px:.2f} px); the largest "
            f"cluster has {int(self.cluster.sum())}"
        )


@dataclasses.dataclass(frozen=True)
class MovingObject:
    """The result of :func:`detect_moving_object`.

    ``box_xyxy`` is the moving object's first-frame box ``(x_min, y_min, x_max, y_max)``;
    ``scan`` the grid stage; ``refine_queries`` ``[M, 3]`` and ``refine_moving`` ``[M]`` the
    fine queries of the box stage and which of them formed the box (empty without refinement);
    ``refine_rejected`` ``[M]`` the fine points that moved more than the threshold but were
    dropped by the change checks (still or dragged, see the module docstring);
    ``left_behind`` ``[H, W]`` the frame-0 pixels whose depth grew, in the box stage's region,
    that were added to the box (``None`` without depth or refinement).
    ``queries``, ``result``, ``stabilized``, ``displacement``, ``moving`` (the kept cluster) and
    ``camera_transforms`` repeat the scan's.
    """

    box_xyxy: Float[np.ndarray, " 4"]
    scan: MotionScan
    refine_queries: Float[np.ndarray, "M 3"]
    refine_moving: Bool[np.ndarray, " M"]
    refine_rejected: Bool[np.ndarray, " M"] | None = None
    left_behind: Bool[np.ndarray, "H W"] | None = None

    @property
    def queries(self) -> np.ndarray:
        return self.scan.queries

    @property
    def result(self) -> TrackResult:
        return self.scan.result

    @property
    def stabilized(self) -> np.ndarray:
        return self.scan.stabilized

    @property
    def displacement(self) -> np.ndarray:
        return self.scan.displacement

    @property
    def moving(self) -> np.ndarray:
        return self.scan.cluster

    @property
    def camera_transforms(self) -> np.ndarray:
        return self.scan.camera_transforms


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


def _check_video(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ShapeError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    if video.shape[0] < 2:
        raise ShapeError(f"moving-object detection needs at least 2 frames, got {video.shape[0]}")
    if video.shape[1] < 2 or video.shape[2] < 2:
        raise ShapeError(f"video frames must be at least 2x2 pixels, got {video.shape[1:3]}")
    return video


def _displacement(tracks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Each point's largest distance from its frame-0 position over its visible frames."""
    offsets = np.linalg.norm(tracks - tracks[:, :1], axis=-1)
    return np.where(visible, offsets, 0.0).max(axis=1)


def _inside_mask(mask: np.ndarray | None, points: np.ndarray) -> np.ndarray:
    if mask is None:
        return np.zeros(len(points), bool)
    h, w = mask.shape
    cols = np.clip(points[:, 0].astype(int), 0, w - 1)
    rows = np.clip(points[:, 1].astype(int), 0, h - 1)
    return mask[rows, cols]


def scan_motion(
    video: UInt8[np.ndarray, "T H W 3"],
    tracker: PointTracker,
    gripper_mask: Bool[np.ndarray, "H W"] | None = None,
    grid_hw: tuple[int, int] = (48, 48),
    motion_threshold_px: float = 2.0,
    noise_factor: float = 16.0,
    min_moving_points: int = 1,
    min_moving_fraction: float = 0.01,
    lone_cluster_share: float = 0.5,
    camera_model: str = "none",
    gripper_dilation_px: int = 0,
    link_cells: int = 1,
) -> MotionScan:
    """Track a full-frame grid and find what moves (the first stage of
    :func:`detect_moving_object`; the parameters are explained there). Never raises for a
    still video: ``significant`` is then False."""
    video = _check_video(video)
    t_len, h, w = video.shape[:3]
    if motion_threshold_px <= 0:
        raise ConfigError(f"motion_threshold_px must be > 0, got {motion_threshold_px}")
    if noise_factor < 0:
        raise ConfigError(f"noise_factor must be >= 0, got {noise_factor}")
    if not 0.0 <= min_moving_fraction <= 1.0 or not 0.0 < lone_cluster_share <= 1.0:
        raise ConfigError(
            "min_moving_fraction must be in [0, 1] and lone_cluster_share in (0, 1], got "
            f"{min_moving_fraction} and {lone_cluster_share}"
        )
    if min_moving_points < 1:
        raise ConfigError(f"min_moving_points must be >= 1, got {min_moving_points}")
    grid, (gh, gw) = full_frame_grid(h, w, grid_hw)
    mask = _gripper(gripper_mask, (h, w), gripper_dilation_px)
    rows, cols = np.mgrid[0:gh, 0:gw]
    keep = ~_inside_mask(mask, grid.reshape(-1, 2)).reshape(gh, gw)
    pts = grid[keep]
    if len(pts) == 0:
        raise DataError(f"the gripper mask covers all {gh * gw} detection queries")
    queries = np.concatenate([np.zeros((len(pts), 1), np.float32), pts[:, ::-1]], axis=1)
    result = tracker.track(video, queries)
    transforms = estimate_camera_motion(result.tracks, result.visible, (w, h), model=camera_model)
    stabilized = remove_camera_motion(result.tracks, transforms)
    displacement = _displacement(stabilized, result.visible)
    noise = float(np.median(displacement))
    threshold = max(float(motion_threshold_px), noise_factor * noise)

    moving = displacement > threshold
    moving_grid = np.zeros((gh, gw), bool)
    moving_grid[keep] = moving
    cluster = largest_cluster(moving_grid, link_cells)[keep]
    size, total = int(cluster.sum()), int(moving.sum())
    significant = size >= min_moving_points and (
        size >= min_moving_fraction * len(pts) or size >= lone_cluster_share * total
    )
    return MotionScan(
        queries=queries,
        cells=np.stack([rows[keep], cols[keep]], axis=-1),
        grid_hw=(gh, gw),
        cell_xy=(w / gw, h / gh),
        result=result,
        stabilized=stabilized,
        displacement=displacement,
        noise_px=noise,
        threshold_px=threshold,
        moving=moving,
        cluster=cluster,
        significant=bool(significant),
        camera_transforms=transforms,
    )


def _gripper(mask, hw, dilation_px: int):
    if mask is None:
        return None
    mask = check_mask(mask, hw, "gripper_mask")
    if dilation_px > 0:
        k = 2 * dilation_px + 1
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    return mask


def _cell_box(points: np.ndarray, half: tuple[float, float], hw: tuple[int, int]) -> np.ndarray:
    """Union of the cells (half-sizes ``half``) centred on ``points`` ``(x, y)``, in the image."""
    h, w = hw
    return np.array(
        [
            max(0.0, points[:, 0].min() - half[0]),
            max(0.0, points[:, 1].min() - half[1]),
            min(float(w), points[:, 0].max() + half[0]),
            min(float(h), points[:, 1].max() + half[1]),
        ],
        np.float32,
    )


def detect_moving_object(
    video: UInt8[np.ndarray, "T H W 3"],
    tracker: PointTracker,
    gripper_mask: Bool[np.ndarray, "H W"] | None = None,
    grid_hw: tuple[int, int] = (48, 48),
    motion_threshold_px: float = 2.0,
    noise_factor: float = 16.0,
    min_moving_points: int = 1,
    min_moving_fraction: float = 0.01,
    lone_cluster_share: float = 0.5,
    camera_model: str = "none",
    gripper_dilation_px: int = 0,
    link_cells: int = 1,
    refine_stride_px: float = 2.0,
    refine_motion_ratio: float = 0.3,
    depth: Float[np.ndarray, "T H W"] | None = None,
    still_change: float = 8.0,
    depth_change: float = 0.02,
    depth_edge_step: float = 0.05,
    edge_radius_px: int = 5,
) -> MovingObject:
    """Find the moving object of a video and its first-frame box: see the module docstring.

    ``gripper_mask`` ``[H, W]`` (nonzero = gripper, on frame 0) removes queries inside it (also
    in the box stage), after dilating it by ``gripper_dilation_px``. ``camera_model`` removes
    camera motion first (``"none"``, ``"affine"`` or ``"homography"``). ``depth`` is an
    optional metric depth video ``[T, H, W]`` (meters; 0, NaN or inf = no measurement) for the
    depth cues of the box stage; ``still_change`` (grey levels), ``depth_change`` and
    ``depth_edge_step`` (fractions of the depth) and ``edge_radius_px`` set the change checks
    (``still_change=0`` turns the still check off). Raises :class:`DataError` saying "nothing
    moved significantly" when the largest cluster of moving points is not significant (a still
    video, or only the masked gripper moved).
    """
    if refine_stride_px < 0 or refine_motion_ratio < 0:
        raise ConfigError(
            "refine_stride_px and refine_motion_ratio must be >= 0, got "
            f"{refine_stride_px} and {refine_motion_ratio}"
        )
    if still_change < 0 or not depth_change > 0 or not depth_edge_step > 0 or edge_radius_px < 1:
        raise ConfigError(
            "still_change must be >= 0, depth_change and depth_edge_step > 0 and "
            f"edge_radius_px >= 1, got {still_change}, {depth_change}, {depth_edge_step} and "
            f"{edge_radius_px}"
        )
    video = _check_video(video)
    if depth is not None:
        depth = np.asarray(depth)
        if depth.shape != video.shape[:3]:
            raise ShapeError(f"depth must be [T, H, W] = {video.shape[:3]}, got {depth.shape}")
    scan = scan_motion(
        video,
        tracker,
        gripper_mask=gripper_mask,
        grid_hw=grid_hw,
        motion_threshold_px=motion_threshold_px,
        noise_factor=noise_factor,
        min_moving_points=min_moving_points,
        min_moving_fraction=min_moving_fraction,
        lone_cluster_share=lone_cluster_share,
        camera_model=camera_model,
        gripper_dilation_px=gripper_dilation_px,
        link_cells=link_cells,
    )
    if not scan.significant:
        raise DataError(
            f"nothing moved significantly: {scan.summary()}, which is neither "
            f"{min_moving_fraction:.0%} of the queries nor {lone_cluster_share:.0%} of the moving "
            "points; the video is still, or only the masked gripper moved"
        )
    h, w = video.shape[1:3]
    cw, ch = scan.cell_xy
    box = _cell_box(scan.queries[scan.cluster][:, [2, 1]], (cw / 2, ch / 2), (h, w))
    empty = np.zeros((0, 3), np.float32)
    if refine_stride_px == 0:
        return MovingObject(box, scan, empty, np.zeros(0, bool), np.zeros(0, bool))

    # Box stage: a fine grid over the cluster's cells grown by one cell.
    mask = _gripper(gripper_mask, (h, w), gripper_dilation_px)
    s = float(refine_stride_px)
    x0, y0 = max(0.0, box[0] - cw), max(0.0, box[1] - ch)
    x1, y1 = min(float(w), box[2] + cw), min(float(h), box[3] + ch)
    region = (int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
    x0, y0 = np.floor(x0 / s) * s, np.floor(y0 / s) * s
    xs = np.arange(x0, x1 - 1e-6, s) + s / 2
    ys = np.arange(y0, y1 - 1e-6, s) + s / 2
    xs, ys = xs[xs < w], ys[ys < h]
    fx, fy = np.meshgrid(xs, ys, indexing="xy")
    fine = np.stack([fx, fy], axis=-1).reshape(-1, 2).astype(np.float32)
    keep = ~_inside_mask(mask, fine)
    fine_queries = np.concatenate(
        [np.zeros((int(keep.sum()), 1), np.float32), fine[keep][:, ::-1]], axis=1
    )
    cues = _change_cues(video, depth, still_change, depth_change, depth_edge_step, edge_radius_px)
    fine_moving = np.zeros(len(fine_queries), bool)
    rejected = np.zeros(len(fine_queries), bool)
    if len(fine_queries):
        result = tracker.track(video, fine_queries)
        stabilized = remove_camera_motion(result.tracks, scan.camera_transforms)
        disp = _displacement(stabilized, result.visible)
        typical = float(np.median(scan.displacement[scan.cluster]))
        limit = max(scan.threshold_px, refine_motion_ratio * typical)
        over = disp > limit
        rejected = over & cues.rejects(fine[keep])
        grid_moving = np.zeros(fx.shape, bool)
        grid_moving.reshape(-1)[np.flatnonzero(keep)] = over & ~rejected
        fine_moving = largest_cluster(grid_moving, 1).reshape(-1)[keep]
    boxes = []
    if fine_moving.any():
        boxes.append(_cell_box(fine_queries[fine_moving][:, [2, 1]], (s / 2, s / 2), (h, w)))
    left_behind = None
    if cues.left_behind is not None:
        left_behind = np.zeros((h, w), bool)
        rx0, ry0, rx1, ry1 = region
        left_behind[ry0:ry1, rx0:rx1] = cues.left_behind[ry0:ry1, rx0:rx1]
        if mask is not None:
            left_behind &= ~mask
        if left_behind.any():
            boxes.append(mask_box(left_behind).astype(np.float32))
    if boxes:
        b = np.stack(boxes)
        box = np.concatenate([b[:, :2].min(axis=0), b[:, 2:].max(axis=0)]).astype(np.float32)
    return MovingObject(box, scan, fine_queries, fine_moving, rejected, left_behind)


@dataclasses.dataclass(frozen=True)
class _ChangeCues:
    """Per-pixel change maps of a video (see the module docstring): ``unchanged`` ``[H, W]``
    float (1 where neither colour nor depth ever changes from frame 0), ``dragged`` ``[H, W]``
    float (far side of a depth edge, later covered) or ``None``, ``left_behind`` ``[H, W]``
    bool (depth grew) or ``None``. Without depth only ``unchanged`` is set."""

    unchanged: np.ndarray | None
    dragged: np.ndarray | None
    left_behind: np.ndarray | None

    def rejects(self, points: Float[np.ndarray, "N 2"]) -> Bool[np.ndarray, " N"]:
        """Points ``(x, y)`` whose starting pixel says they did not move (bilinear sample of
        the maps: a point between pixels needs all of them unchanged, or any of them
        dragged)."""
        out = np.zeros(len(points), bool)
        if self.unchanged is not None:
            out |= _bilinear(self.unchanged, points) > 1.0 - 1e-6
        if self.dragged is not None:
            out |= _bilinear(self.dragged, points) > 0.0
        return out


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float ``[H, W]`` map at ``(x, y)`` points (pixel corners at
    integers, so pixel ``(i, j)``'s centre is ``(j + 0.5, i + 0.5)``); edges replicate."""
    map_x = (points[:, 0] - 0.5).astype(np.float32)[None]
    map_y = (points[:, 1] - 0.5).astype(np.float32)[None]
    return cv2.remap(
        image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )[0]


def _change_cues(
    video: np.ndarray,
    depth: np.ndarray | None,
    still_change: float,
    depth_change: float,
    depth_edge_step: float,
    edge_radius_px: int,
) -> _ChangeCues:
    frames = video.astype(np.int16)
    colour = np.abs(frames - frames[:1]).max(axis=-1).max(axis=0).astype(np.float32)  # [H, W]
    unchanged = None
    if still_change > 0:
        unchanged = colour <= max(float(still_change), 2.0 * float(np.median(colour)))
    if depth is None:
        return _ChangeCues(None if unchanged is None else unchanged.astype(np.float32), None, None)
    d = np.asarray(depth, np.float64)
    valid = valid_depth(d) & valid_depth(d[:1])
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(valid, (d - d[:1]) / np.where(valid, d[:1], 1.0), 0.0)  # [T, H, W]
    grew, came_nearer = rel.max(axis=0), -rel.min(axis=0)
    limit = max(float(depth_change), 2.0 * float(np.median(np.maximum(grew, came_nearer))))
    left_behind = grew > limit
    covered = came_nearer > limit
    d0 = np.where(valid_depth(d[0]), d[0], np.inf).astype(np.float32)
    k = 2 * int(edge_radius_px) + 1
    nearest = cv2.erode(d0, np.ones((k, k), np.uint8), borderType=cv2.BORDER_REPLICATE)
    far_side = nearest < d0 * (1.0 - float(depth_edge_step))
    dragged = far_side & covered & ~left_behind
    if unchanged is not None:
        unchanged = unchanged & ~left_behind & ~covered
    return _ChangeCues(
        None if unchanged is None else unchanged.astype(np.float32),
        dragged.astype(np.float32),
        left_behind,
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


def mask_box(mask: Bool[np.ndarray, "H W"]) -> Float[np.ndarray, " 4"]:
    """The box ``(x_min, y_min, x_max, y_max)`` of a mask's pixels (pixel corners, so a single
    pixel ``(i, j)`` gives ``(j, i, j + 1, i + 1)``); :class:`DataError` for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        raise DataError("the mask is empty: it has no box")
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


__all__ = [
    "MotionScan",
    "MovingObject",
    "box_iou",
    "check_mask",
    "detect_moving_object",
    "full_frame_grid",
    "largest_cluster",
    "mask_box",
    "scan_motion",
]
