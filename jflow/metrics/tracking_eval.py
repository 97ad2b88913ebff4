"""Evaluating the flow-extraction stages against ground truth and a reference tracker.

Two sources (issue 3, acceptance points 1 and 2):

* **Kitchen episodes** (:class:`jflow.sim.episodes.KitchenEpisode`: rendered video, metric
  depth, ground-truth 3D points of the target object): :func:`evaluate_kitchen_episode`
  measures the point tracker (TAP-Vid <delta^x_avg on the target's ground-truth points, queried
  where they are visible on frame 0), the 3D flow (ADE of the tracks lifted with the rendered
  depth, :func:`jflow.tracking.lifting.lift_tracks`) and moving-object detection (IoU of the
  detected box with the ground-truth object box, and how many queries fell on the gripper).
* **The real bridge_spoon episode** (no ground truth; the authors' CoTracker3 tracks as the
  reference): :func:`compare_with_reference` and :func:`static_displacement`.

**Ground-truth object box.** The box of the target object's segmentation on frame 0
(``clip.object_mask``, :func:`jflow.tracking.moving_object.mask_box`). The target object is
the part that moves: the microwave *door*, the hinge cabinet's left door, the kettle, the light
switch lever, the burner knob; it matches the box of the object's ground-truth points visible
on frame 0 to 1-2 px.

**ADE.** Mean Euclidean distance (meters, camera frame) between lifted and ground-truth points
over the point-frames after frame 0 where the ground truth shows the point, the tracker calls
it visible and the lifting kept it (valid depth within 10 m, not on a depth edge). The sums are returned so
that several episodes can be pooled (:func:`pooled_ade`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Bool, Float

from jflow.errors import DataError, ShapeError
from jflow.geometry.transforms import transform_points
from jflow.metrics.tapvid import tapvid_metrics
from jflow.tracking.interface import PointTracker
from jflow.tracking.lifting import lift_tracks
from jflow.tracking.lucas_kanade import LucasKanadeTracker
from jflow.tracking.moving_object import box_iou, detect_moving_object, mask_box


@dataclasses.dataclass(frozen=True)
class KitchenTrackingResult:
    """Measures of one kitchen episode (see the module docstring).

    ``delta_avg`` / ``average_jaccard`` are TAP-Vid metrics over ``num_points`` queries;
    ``ade_m`` = ``ade_sum_m / ade_count`` (0 point-frames raise no error: ``ade_m`` is then
    ``None``), ``lifted_fraction`` the share of ground-truth-visible point-frames after frame 0
    that the lifted flow keeps; ``iou`` the detected box against ``gt_box`` (0 when nothing was
    detected, ``detection`` holds the reason); ``gripper_queries`` the detection queries that
    started on the gripper (robot episodes; ``None`` otherwise).
    """

    task_id: str
    kind: str
    seed: int
    delta_avg: float
    average_jaccard: float
    num_points: int
    ade_m: float | None
    ade_sum_m: float
    ade_count: int
    lifted_fraction: float
    iou: float
    box: tuple[float, float, float, float] | None
    gt_box: tuple[float, float, float, float]
    detection: str
    gripper_queries: int | None


def evaluate_kitchen_episode(
    episode,
    tracker: PointTracker | None = None,
    detect_kwargs: dict | None = None,
    max_depth_step: float | None = 0.05,
    max_depth_m: float = 10.0,
) -> KitchenTrackingResult:
    """Track, lift and detect on one :class:`~jflow.sim.episodes.KitchenEpisode`.

    Queries are the target's ground-truth points visible on frame 0; tracks are compared with
    the ground-truth tracks (``"first"`` mode: frames after 0 where the ground truth shows the
    point). Detection runs on the video with the episode's frame-0 gripper mask for robot
    episodes and none for human ones. Rendered depth beyond ``max_depth_m`` (the far plane,
    where no surface is) counts as no measurement, as beyond a depth sensor's range. Raises
    :class:`DataError` when no ground-truth point is visible on frame 0.
    """
    tracker = tracker if tracker is not None else LucasKanadeTracker()
    clip = episode.clip
    flow = clip.flow
    video = np.asarray(clip.video)
    vis = np.asarray(flow.visible)  # [T, N]
    tracks = np.asarray(flow.tracks)  # [T, N, 2]
    start = np.flatnonzero(vis[0])
    if len(start) == 0:
        raise DataError(f"{clip.task_id} seed {episode.seed}: no ground-truth point on frame 0")
    gt_tracks = tracks[:, start].transpose(1, 0, 2)
    gt_occ = ~vis[:, start].T
    queries = np.stack([np.zeros(len(start)), gt_tracks[:, 0, 1], gt_tracks[:, 0, 0]], axis=-1)
    result = tracker.track(video, queries)
    h, w = video.shape[1:3]
    metrics = tapvid_metrics(
        queries, gt_occ, gt_tracks, ~result.visible, result.tracks, "first", (w, h)
    )

    lifted = lift_tracks(
        result.tracks.transpose(1, 0, 2),
        result.visible.T,
        np.asarray(clip.depth_video),
        clip.intrinsics,
        max_depth_step=max_depth_step,
        max_depth_m=max_depth_m,
    )
    gt_cam = np.asarray(
        transform_points(clip.camera_pose.inverse(), np.asarray(flow.points)[:, start])
    )
    after = np.arange(len(video))[:, None] > 0
    gt_seen = vis[:, start] & after
    both = np.asarray(lifted.visible) & gt_seen
    dist = np.linalg.norm(np.asarray(lifted.points, np.float64) - gt_cam, axis=-1)
    ade_sum, ade_count = float(dist[both].sum()), int(both.sum())

    gripper = np.asarray(episode.gripper_mask[0]) if episode.kind == "robot" else None
    gt_box = mask_box(np.asarray(clip.object_mask))
    reason = ""
    try:
        # The clip's metric depth reaches the detection, as in extract_flow (detect_kwargs can
        # override it, e.g. depth=None for the video-only reading).
        kwargs = {"depth": np.asarray(clip.depth_video), **(detect_kwargs or {})}
        found = detect_moving_object(video, tracker, gripper_mask=gripper, **kwargs)
    except DataError as err:
        found, reason = None, str(err)
    iou = 0.0 if found is None else box_iou(found.box_xyxy, gt_box)
    gripper_queries = None
    if gripper is not None and found is not None:
        starts = np.concatenate([found.queries, found.refine_queries])[:, [2, 1]]
        rows = np.clip(starts[:, 1].astype(int), 0, h - 1)
        cols = np.clip(starts[:, 0].astype(int), 0, w - 1)
        gripper_queries = int(gripper[rows, cols].sum())
    return KitchenTrackingResult(
        task_id=clip.task_id,
        kind=episode.kind,
        seed=int(episode.seed),
        delta_avg=float(metrics["average_pts_within_thresh"]),
        average_jaccard=float(metrics["average_jaccard"]),
        num_points=len(start),
        ade_m=ade_sum / ade_count if ade_count else None,
        ade_sum_m=ade_sum,
        ade_count=ade_count,
        lifted_fraction=float(both.sum() / max(int(gt_seen.sum()), 1)),
        iou=float(iou),
        box=None if found is None else tuple(float(v) for v in found.box_xyxy),
        gt_box=tuple(float(v) for v in gt_box),
        detection=reason if found is None else found.scan.summary(),
        gripper_queries=gripper_queries,
    )


def pooled_ade(results: list[KitchenTrackingResult]) -> float:
    """ADE over all the point-frames of several episodes (meters); :class:`DataError` if none."""
    count = sum(r.ade_count for r in results)
    if count == 0:
        raise DataError("no lifted point-frame to measure the ADE on")
    return sum(r.ade_sum_m for r in results) / count


def compare_with_reference(
    tracks: Float[np.ndarray, "N T 2"],
    visible: Bool[np.ndarray, "N T"],
    reference: Float[np.ndarray, "T N 3"],
    image_size: tuple[int, int],
    moving_threshold_px: float = 10.0,
) -> dict[str, dict[str, float]]:
    """TAP-Vid metrics of ``tracks`` with a reference tracker's ``(x, y, visible)`` as ground
    truth, on all points and on the points whose reference track moves more than
    ``moving_threshold_px`` from its first position at some frame (visible or not).

    The queries are the reference's frame-0 positions (``"first"`` mode: frames after 0 where
    the reference shows the point). Returns ``{"all": metrics, "moving": metrics}``, each with
    ``num_points``. Raises :class:`ShapeError` for mismatched shapes and :class:`DataError` when
    a reference point is not visible on frame 0 or no point moves.
    """
    reference = np.asarray(reference, np.float64)
    tracks = np.asarray(tracks)
    if reference.ndim != 3 or reference.shape[-1] != 3:
        raise ShapeError(f"reference must be [T, N, 3] (x, y, visible), got {reference.shape}")
    if tracks.shape != (reference.shape[1], reference.shape[0], 2):
        raise ShapeError(
            f"tracks must be [N, T, 2] = {(reference.shape[1], reference.shape[0], 2)}, "
            f"got {tracks.shape}"
        )
    ref_xy = reference[..., :2].transpose(1, 0, 2)
    ref_occ = reference[..., 2].T < 0.5
    if ref_occ[:, 0].any():
        raise DataError(f"{int(ref_occ[:, 0].sum())} reference points are not visible on frame 0")
    width, height = image_size
    queries = reference_queries(reference, image_size)
    motion = np.linalg.norm(ref_xy - ref_xy[:, :1], axis=-1).max(axis=1)
    moving = motion > moving_threshold_px
    if not moving.any():
        raise DataError(f"no reference point moves more than {moving_threshold_px} px")
    out = {}
    for name, sel in (("all", np.ones(len(ref_xy), bool)), ("moving", moving)):
        m = tapvid_metrics(
            queries[sel],
            ref_occ[sel],
            ref_xy[sel],
            ~visible[sel],
            tracks[sel],
            "first",
            (width, height),
        )
        m["num_points"] = float(sel.sum())
        out[name] = m
    return out


def reference_queries(reference: Float[np.ndarray, "T N 3"], image_size: tuple[int, int]):
    """The ``(t, y, x)`` queries of a reference's frame-0 positions, clipped into the image."""
    reference = np.asarray(reference)
    width, height = image_size
    return np.stack(
        [
            np.zeros(reference.shape[1]),
            np.clip(reference[0, :, 1], 0, height - 1e-3),
            np.clip(reference[0, :, 0], 0, width - 1e-3),
        ],
        axis=-1,
    ).astype(np.float32)


def static_displacement(
    points: Float[np.ndarray, "T N 3"], visible: Bool[np.ndarray, "T N"]
) -> float:
    """Median 3D distance (meters) of each point from its frame-0 position, over the
    point-frames after frame 0 where the point and its frame-0 self are visible. For an object
    that does not move this measures the noise of the lifted flow (depth noise, mostly).
    Raises :class:`DataError` when no such point-frame exists and :class:`ShapeError` for
    non-finite visible points."""
    points = np.asarray(points, np.float64)
    visible = np.asarray(visible, bool)
    if points.ndim != 3 or points.shape[-1] != 3 or visible.shape != points.shape[:2]:
        raise ShapeError(
            f"points [T, N, 3] and visible [T, N], got {points.shape}, {visible.shape}"
        )
    use = visible & visible[:1]
    use[0] = False
    if not use.any():
        raise DataError("no point is visible both on frame 0 and later")
    if not np.all(np.isfinite(points[visible])):
        raise ShapeError("lifted points are not finite where they are visible")
    dist = np.linalg.norm(points - points[:1], axis=-1)
    return float(np.median(dist[use]))


__all__ = [
    "KitchenTrackingResult",
    "compare_with_reference",
    "evaluate_kitchen_episode",
    "pooled_ade",
    "reference_queries",
    "static_displacement",
]
