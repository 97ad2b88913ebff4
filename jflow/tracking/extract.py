"""The 3D object-flow extraction pipeline (3DFlowAction section 3.1, Dream2Flow section 4.2).

Stages, for any :class:`~jflow.tracking.interface.PointTracker` (Lucas-Kanade by default):

1. **Object region.** With an object mask (frame 0), the mask eroded by ``mask_erosion_px``.
   Without one, moving-object detection (:mod:`jflow.tracking.moving_object`): a full-frame
   grid of queries minus the gripper mask is tracked, and the box of the points that move is
   the region. A metric depth video (``depth``, not a relative one) also goes to the detection
   when ``detect_with_depth`` (default): pixels whose depth grows were on the moving object,
   and background dragged along under a nearer edge is dropped.
2. **Dense tracks.** A ``grid_hw`` grid of queries (16x16 = 256 points by default) is placed in
   the region on frame 0 and tracked. Point order is row-major over the query grid: rows by
   image y (top to bottom), then columns by image x, so ``[T, N, C] -> [T, 16, 16, C]`` is a
   reshape (:func:`jflow.flow.grid.flow_to_grid`).
3. **Camera motion** (``camera_motion`` not ``"none"``): per-frame transforms fitted to
   background tracks are removed from the tracks (:mod:`jflow.tracking.camera_motion`).
4. **Depth.** A metric depth video is used as is; a relative depth video is aligned to a metric
   reference depth of frame 0 by a least-squares scale (and shift) over the object's pixels.
   Without depth there is no 3D flow: the result carries the 2D tracks only
   (``Extraction.clip is None``), and :meth:`Extraction.require_clip` /
   :func:`extract_flow_from_file` raise :class:`DataError` saying depth is needed.
5. **Lifting** (:func:`jflow.tracking.lifting.lift_tracks`): per-point depth, invalid depth and
   tracker-occluded points masked, optional temporal median, unprojection to the camera frame;
   with a camera pose the flow is mapped to the world frame.

With camera-motion removal the tracks are in frame 0's pixels while depth is sampled at the
raw track position of each frame: an image-space approximation, exact only for a camera that
rotates about its centre.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import jaxlie
import numpy as np
from jaxtyping import Bool, Float, UInt8

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.flow.grid import grid_queries_in_box
from jflow.flow.records import FlowClip, pose_from_array
from jflow.geometry.camera import PinholeIntrinsics
from jflow.tracking.camera_motion import (
    MOTION_MODELS,
    estimate_camera_motion,
    remove_camera_motion,
)
from jflow.tracking.interface import PointTracker
from jflow.tracking.lifting import align_depth, lift_tracks, valid_depth
from jflow.tracking.lucas_kanade import LucasKanadeTracker
from jflow.tracking.moving_object import (
    MovingObject,
    check_mask,
    detect_moving_object,
    full_frame_grid,
)
from jflow.tracking.video_io import read_video_file

DEPTH_ALIGNMENTS = ("scale", "scale_shift")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """Settings of :func:`extract_flow` (all lengths in pixels of the input video).

    ``fovy_deg`` gives centred pinhole intrinsics when the input has none (55 degrees, as the
    3DFlowAction code assumes for BridgeData). :func:`extract_from_file` keeps every
    ``frame_stride``-th frame, at most ``max_frames`` of them. ``intrinsics`` ``(fx, fy, cx, cy)`` and
    ``camera_pose`` (``world_from_camera`` as ``wxyz_xyz``) override what a file holds.
    The detection settings (``detect_grid_hw`` ... ``refine_motion_ratio``, ``still_change``
    ... ``edge_radius_px``) are those of
    :func:`jflow.tracking.moving_object.detect_moving_object` (``detect_with_depth`` gives it
    the metric depth video), the ``lk_*`` ones those of
    :class:`~jflow.tracking.lucas_kanade.LucasKanadeTracker`, ``median_window`` and
    ``max_depth_step`` those of :func:`jflow.tracking.lifting.lift_tracks`.
    """

    grid_hw: tuple[int, int] = (16, 16)
    detect_grid_hw: tuple[int, int] = (48, 48)
    motion_threshold_px: float = 2.0
    noise_factor: float = 16.0
    min_moving_points: int = 1
    min_moving_fraction: float = 0.01
    lone_cluster_share: float = 0.5
    refine_stride_px: float = 2.0
    refine_motion_ratio: float = 0.3
    still_change: float = 8.0
    depth_change: float = 0.02
    depth_edge_step: float = 0.05
    edge_radius_px: int = 5
    detect_with_depth: bool = True
    gripper_dilation_px: int = 0
    mask_erosion_px: int = 2
    camera_motion: str = "none"
    depth_alignment: str = "scale_shift"
    median_window: int = 1
    max_depth_step: float | None = 0.05
    max_depth_m: float | None = None
    """Depth beyond this range (meters) counts as no measurement (a renderer's far plane, a
    sensor's maximum range); ``None`` keeps every finite positive depth."""
    fovy_deg: float = 55.0
    intrinsics: tuple[float, float, float, float] | None = None
    camera_pose: tuple[float, float, float, float, float, float, float] | None = None
    frame_stride: int = 1
    max_frames: int | None = None
    lk_win_size: int = 7
    lk_max_level: int = 3
    lk_fb_threshold_px: float = 0.5
    lk_min_ncc: float = 0.5
    lk_neighbors: int = 8
    task_id: str = ""

    def validate(self) -> ExtractConfig:
        if self.camera_motion not in MOTION_MODELS:
            raise ConfigError(
                f"camera_motion must be one of {MOTION_MODELS}, got {self.camera_motion!r}"
            )
        if self.depth_alignment not in DEPTH_ALIGNMENTS:
            raise ConfigError(
                f"depth_alignment must be one of {DEPTH_ALIGNMENTS}, got {self.depth_alignment!r}"
            )
        if min(self.grid_hw) < 1:
            raise ConfigError(f"grid_hw must be positive, got {self.grid_hw}")
        if self.mask_erosion_px < 0:
            raise ConfigError(f"mask_erosion_px must be >= 0, got {self.mask_erosion_px}")
        if self.frame_stride < 1 or (self.max_frames is not None and self.max_frames < 2):
            raise ConfigError(
                f"frame_stride must be >= 1 and max_frames >= 2, got {self.frame_stride}, {self.max_frames}"
            )
        if self.median_window < 1 or self.median_window % 2 == 0:
            raise ConfigError(f"median_window must be an odd number >= 1, got {self.median_window}")
        if self.max_depth_m is not None and not self.max_depth_m > 0:
            raise ConfigError(f"max_depth_m must be > 0 or None, got {self.max_depth_m}")
        if self.max_depth_step is not None and not self.max_depth_step > 0:
            raise ConfigError(f"max_depth_step must be > 0 or None, got {self.max_depth_step}")
        return self

    def make_tracker(self) -> LucasKanadeTracker:
        return LucasKanadeTracker(
            win_size=self.lk_win_size,
            max_level=self.lk_max_level,
            fb_threshold_px=self.lk_fb_threshold_px,
            min_ncc=self.lk_min_ncc,
            neighbors=self.lk_neighbors,
        )


@dataclasses.dataclass(frozen=True)
class Extraction:
    """What :func:`extract_flow` found.

    ``tracks`` ``[T, N, 2]`` (camera motion removed) and ``visible`` ``[T, N]`` are the 2D
    result, always present; ``clip`` is the 3D :class:`FlowClip`, ``None`` without depth.
    ``queries`` ``[N, 3]`` are the ``(t, y, x)`` grid queries, ``region_mask`` ``[H, W]`` where
    they were drawn, ``box_xyxy`` the region's box and ``detection`` the moving-object stage
    (``None`` when an object mask was given).
    """

    tracks: Float[np.ndarray, "T N 2"]
    visible: Bool[np.ndarray, "T N"]
    queries: Float[np.ndarray, "N 3"]
    box_xyxy: Float[np.ndarray, " 4"]
    region_mask: Bool[np.ndarray, "H W"]
    camera_transforms: Float[np.ndarray, "T 3 3"]
    detection: MovingObject | None
    clip: FlowClip | None

    def require_clip(self) -> FlowClip:
        """The 3D flow clip, or :class:`DataError` when the input had no depth."""
        if self.clip is None:
            raise DataError(
                "depth is required for 3D flow: give a metric depth video, or a relative depth "
                "video with a metric reference depth of frame 0; the 2D tracks are in "
                "Extraction.tracks"
            )
        return self.clip


def grid_points_in_mask(
    mask: Bool[np.ndarray, "H W"], grid_hw: tuple[int, int] = (16, 16)
) -> Float[np.ndarray, "N 2"]:
    """``H x W`` pixel centres ``(x, y)`` inside ``mask``, spread like a grid, row-major.

    The mask's pixels are split into ``H`` bands of equal pixel count by image y; in each band
    ``W`` pixels are picked at evenly spaced ranks of x. Raises :class:`DataError` when the
    mask is empty or has fewer pixels than the grid.
    """
    mask = np.asarray(mask) > 0
    gh, gw = grid_hw
    ys, xs = np.nonzero(mask)  # row-major: sorted by y, then x
    if len(ys) == 0:
        raise DataError("the object mask is empty (after erosion)")
    if len(ys) < gh * gw:
        raise DataError(
            f"the object mask has {len(ys)} pixels (after erosion), fewer than the {gh}x{gw} "
            "query grid: use a smaller grid or less erosion"
        )
    pts = np.stack([xs + 0.5, ys + 0.5], axis=-1).astype(np.float32)
    rows = []
    for band in np.array_split(np.arange(len(pts)), gh):
        band = band[np.argsort(pts[band, 0], kind="stable")]
        picks = ((np.arange(gw) + 0.5) * len(band) / gw).astype(int)
        rows.append(pts[band[picks]])
    return np.concatenate(rows)


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Erode a boolean mask by ``pixels`` (a square structuring element)."""
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    return cv2.erode(mask.astype(np.uint8), np.ones((k, k), np.uint8)) > 0


def _box_mask(box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    ys = np.arange(h)[:, None] + 0.5
    xs = np.arange(w)[None, :] + 0.5
    return (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])


def _metric_depth(
    config: ExtractConfig,
    hw: tuple[int, int],
    t_len: int,
    depth: np.ndarray | None,
    relative_depth: np.ndarray | None,
    reference_depth: np.ndarray | None,
    region: np.ndarray,
) -> np.ndarray | None:
    for name, value in (("depth", depth), ("relative_depth", relative_depth)):
        if value is not None and np.shape(value) != (t_len, *hw):
            raise ShapeError(f"{name} must be [T, H, W] = {(t_len, *hw)}, got {np.shape(value)}")
    if depth is not None:
        return np.asarray(depth, np.float32)
    if relative_depth is None:
        return None
    if reference_depth is None:
        raise DataError(
            "a relative depth video needs a metric reference_depth of frame 0 to be aligned"
        )
    if np.shape(reference_depth) != hw:
        raise ShapeError(f"reference_depth must be [H, W] = {hw}, got {np.shape(reference_depth)}")
    scale, shift = align_depth(
        relative_depth[0],
        reference_depth,
        region,
        with_shift=config.depth_alignment == "scale_shift",
    )
    return (scale * np.asarray(relative_depth, np.float64) + shift).astype(np.float32)


def extract_flow(
    video: UInt8[np.ndarray, "T H W 3"],
    config: ExtractConfig = ExtractConfig(),
    *,
    tracker: PointTracker | None = None,
    depth: Float[np.ndarray, "T H W"] | None = None,
    relative_depth: Float[np.ndarray, "T H W"] | None = None,
    reference_depth: Float[np.ndarray, "H W"] | None = None,
    object_mask: Bool[np.ndarray, "H W"] | None = None,
    gripper_mask: Bool[np.ndarray, "H W"] | None = None,
    intrinsics: PinholeIntrinsics | None = None,
    camera_pose: jaxlie.SE3 | None = None,
    instruction: str = "",
    task_id: str = "",
) -> Extraction:
    """Run the pipeline of the module docstring on one video; see :class:`Extraction`.

    Masks are frame-0 masks (nonzero = in). ``camera_pose`` is ``world_from_camera``; with it the
    clip's flow is in the world frame, without it in the camera frame (and the clip's
    ``camera_pose`` is the identity).
    """
    config.validate()
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ShapeError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    t_len, h, w = video.shape[:3]
    if t_len < 2:
        raise ShapeError(f"flow extraction needs at least 2 frames, got {t_len}")
    tracker = tracker if tracker is not None else config.make_tracker()
    gripper = None if gripper_mask is None else check_mask(gripper_mask, (h, w), "gripper_mask")

    detection = None
    if object_mask is not None:
        obj = check_mask(object_mask, (h, w), "object_mask")
        if not obj.any():
            raise DataError("the object mask is empty")
        region = erode(obj, config.mask_erosion_px)
        points = grid_points_in_mask(region, config.grid_hw)
        transforms = np.tile(np.eye(3), (t_len, 1, 1))
        if config.camera_motion != "none":
            grid, _ = full_frame_grid(h, w, config.detect_grid_hw)
            grid = grid.reshape(-1, 2)
            inside = obj | (gripper if gripper is not None else False)
            grid = grid[~inside[grid[:, 1].astype(int), grid[:, 0].astype(int)]]
            bg = tracker.track(video, np.concatenate([np.zeros((len(grid), 1)), grid[:, ::-1]], 1))
            transforms = estimate_camera_motion(bg.tracks, bg.visible, (w, h), config.camera_motion)
    else:
        detection = detect_moving_object(
            video,
            tracker,
            gripper_mask=gripper,
            grid_hw=config.detect_grid_hw,
            motion_threshold_px=config.motion_threshold_px,
            noise_factor=config.noise_factor,
            min_moving_points=config.min_moving_points,
            min_moving_fraction=config.min_moving_fraction,
            lone_cluster_share=config.lone_cluster_share,
            camera_model=config.camera_motion,
            gripper_dilation_px=config.gripper_dilation_px,
            refine_stride_px=config.refine_stride_px,
            refine_motion_ratio=config.refine_motion_ratio,
            depth=depth if config.detect_with_depth else None,
            still_change=config.still_change,
            depth_change=config.depth_change,
            depth_edge_step=config.depth_edge_step,
            edge_radius_px=config.edge_radius_px,
        )
        box = detection.box_xyxy
        if not (box[2] > box[0] and box[3] > box[1]):
            raise DataError(f"the moving points span a degenerate box {box.tolist()}")
        region = _box_mask(box, (h, w))
        points = grid_queries_in_box(box, config.grid_hw)
        transforms = detection.camera_transforms
    ys, xs = np.nonzero(region)
    box_xyxy = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    if detection is not None:
        box_xyxy = detection.box_xyxy

    queries = np.concatenate([np.zeros((len(points), 1), np.float32), points[:, ::-1]], axis=1)
    result = tracker.track(video, queries)
    raw = np.transpose(result.tracks, (1, 0, 2)).astype(np.float32)
    tracks = np.transpose(remove_camera_motion(result.tracks, transforms), (1, 0, 2)).astype(
        np.float32
    )
    visible = np.transpose(result.visible).astype(bool)

    metric = _metric_depth(config, (h, w), t_len, depth, relative_depth, reference_depth, region)
    clip = None
    if metric is not None:
        if intrinsics is None:
            intrinsics = (
                PinholeIntrinsics.from_fovy(config.fovy_deg, w, h)
                if config.intrinsics is None
                else _intrinsics_from_tuple(config.intrinsics, w, h)
            )
        if (intrinsics.height, intrinsics.width) != (h, w):
            raise ShapeError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height} images, the video is {w}x{h}"
            )
        lifted = lift_tracks(
            raw,
            visible,
            metric,
            intrinsics,
            config.median_window,
            config.max_depth_step,
            config.max_depth_m,
        )
        flow = dataclasses.replace(lifted, tracks=tracks).numpy()
        pose = jaxlie.SE3.identity() if camera_pose is None else camera_pose
        if camera_pose is not None:
            flow = flow.to_world(camera_pose).numpy()
        clip = FlowClip(
            rgb=video[0],
            depth=np.where(valid_depth(metric[0]), metric[0], 0.0).astype(np.float32),
            intrinsics=intrinsics,
            camera_pose=pose,
            object_mask=region
            if object_mask is None
            else check_mask(object_mask, (h, w), "object_mask"),
            instruction=instruction,
            task_id=task_id or config.task_id,
            flow=flow,
            video=video,
            depth_video=np.where(valid_depth(metric), metric, 0.0).astype(np.float32),
        ).validate()
    return Extraction(
        tracks=tracks,
        visible=visible,
        queries=queries,
        box_xyxy=box_xyxy,
        region_mask=region,
        camera_transforms=transforms,
        detection=detection,
        clip=clip,
    )


def _intrinsics_from_tuple(values, width: int, height: int) -> PinholeIntrinsics:
    values = np.asarray(values, np.float64).reshape(-1)
    if values.shape != (4,):
        raise ShapeError(f"intrinsics must be (fx, fy, cx, cy), got {values.tolist()}")
    fx, fy, cx, cy = values
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
    return PinholeIntrinsics.from_matrix(k, width, height)


def extract_from_file(
    path: str | Path, config: ExtractConfig = ExtractConfig(), tracker: PointTracker | None = None
) -> Extraction:
    """Read an mp4 or .npz (:func:`jflow.tracking.video_io.read_video_file`) and extract from it.

    Intrinsics and camera pose come from ``config`` first, then from the file, else a centred
    ``config.fovy_deg`` pinhole and no pose. ``task_id`` defaults to the file's stem.
    """
    config.validate()
    data = read_video_file(path)
    keep = slice(
        0,
        None if config.max_frames is None else config.max_frames * config.frame_stride,
        config.frame_stride,
    )
    data = dataclasses.replace(
        data,
        frames=data.frames[keep],
        depth=None if data.depth is None else data.depth[keep],
        relative_depth=None if data.relative_depth is None else data.relative_depth[keep],
    )
    h, w = data.frames.shape[1:3]
    k = config.intrinsics if config.intrinsics is not None else data.intrinsics
    pose = config.camera_pose if config.camera_pose is not None else data.camera_pose
    return extract_flow(
        data.frames,
        config,
        tracker=tracker,
        depth=data.depth,
        relative_depth=data.relative_depth,
        reference_depth=data.reference_depth,
        object_mask=data.object_mask,
        gripper_mask=data.gripper_mask,
        intrinsics=None if k is None else _intrinsics_from_tuple(k, w, h),
        camera_pose=None if pose is None else pose_from_array(np.asarray(pose, np.float64)),
        instruction=data.instruction,
        task_id=config.task_id or data.name,
    )


def extract_flow_from_file(
    path: str | Path, config: ExtractConfig = ExtractConfig(), tracker: PointTracker | None = None
) -> FlowClip:
    """The 3D :class:`FlowClip` of a file; :class:`DataError` when the file has no depth."""
    extraction = extract_from_file(path, config, tracker)
    if extraction.clip is None:
        raise DataError(
            f"{path} has no depth: depth is required for 3D flow (an .npz with depth_m, or "
            "relative_depth with reference_depth); extract_from_file() returns its 2D tracks"
        )
    return extraction.clip


__all__ = [
    "DEPTH_ALIGNMENTS",
    "ExtractConfig",
    "Extraction",
    "erode",
    "extract_flow",
    "extract_flow_from_file",
    "extract_from_file",
    "grid_points_in_mask",
]
