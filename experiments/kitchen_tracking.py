"""Lucas-Kanade tracking, 3D lifting and moving-object detection against kitchen ground truth.

Prints, per episode: <delta^x_avg of LK on the target object's ground-truth points, the 3D ADE of
the LK tracks lifted with the sensor depth, and the IoU of the detected moving-object box with
the object's frame-0 box. ``python experiments/kitchen_tracking.py`` (tests/test_tracking_kitchen.py
asserts the same numbers on a smaller set).
"""

from __future__ import annotations

import numpy as np

from jflow.errors import DataError
from jflow.geometry.transforms import transform_points
from jflow.metrics.flow3d import flow_errors
from jflow.metrics.tapvid import tapvid_metrics
from jflow.runtime import configure_rendering
from jflow.tracking.lifting import lift_tracks
from jflow.tracking.lucas_kanade import LucasKanadeTracker
from jflow.tracking.moving_object import box_iou, detect_moving_object


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def evaluate_episode(ep, tracker=None) -> dict[str, float]:
    tracker = tracker or LucasKanadeTracker()
    clip = ep.clip
    flow = clip.flow
    video = np.asarray(clip.video)
    vis = np.asarray(flow.visible)  # [T, N]
    tracks = np.asarray(flow.tracks)  # [T, N, 2]
    start = np.flatnonzero(vis[0])
    gt_tracks = tracks[:, start].transpose(1, 0, 2)
    gt_occ = ~vis[:, start].T
    queries = np.stack([np.zeros(len(start)), gt_tracks[:, 0, 1], gt_tracks[:, 0, 0]], axis=-1)
    result = tracker.track(video, queries)
    h, w = video.shape[1:3]
    metrics = tapvid_metrics(
        queries, gt_occ, gt_tracks, ~result.visible, result.tracks, "first", (w, h)
    )
    lifted = lift_tracks(
        result.tracks.transpose(1, 0, 2), result.visible.T, clip.depth_video, clip.intrinsics
    )
    gt_cam = np.asarray(
        transform_points(clip.camera_pose.inverse(), np.asarray(flow.points)[:, start])
    )
    both = np.asarray(lifted.visible) & vis[:, start]
    errors = flow_errors(np.asarray(lifted.points), gt_cam, both)
    gripper = ep.gripper_mask[0] if ep.kind == "robot" else None
    try:
        detection = detect_moving_object(video, tracker, gripper_mask=gripper)
    except DataError:  # Nothing was found moving: a detection miss.
        detection = None
    iou = 0.0 if detection is None else box_iou(detection.box_xyxy, mask_box(clip.object_mask))
    out = {
        "delta_avg": float(metrics["average_pts_within_thresh"]),
        "ade_m": float(errors.ade),
        "iou": float(iou),
    }
    if gripper is not None and detection is not None:
        inside = gripper[queries_px(detection.queries, gripper.shape)]
        out["gripper_queries"] = int(inside.sum())
    return out


def queries_px(queries: np.ndarray, hw: tuple[int, int]):
    ys = np.clip(queries[:, 1].astype(int), 0, hw[0] - 1)
    xs = np.clip(queries[:, 2].astype(int), 0, hw[1] - 1)
    return ys, xs


def main() -> None:
    configure_rendering()  # Before MuJoCo creates its renderer.
    from jflow.data.kitchen_dataset import DEFAULT_TASKS
    from jflow.sim.episodes import KitchenWorld

    rows = []
    with KitchenWorld(resolution=128) as world:
        for task in DEFAULT_TASKS:
            for seed in range(3):
                ep = world.render_episode(task, seed, frames=16)
                rows.append((task, "human", seed, evaluate_episode(ep)))
        for task in ("open_microwave", "open_slide_cabinet"):
            for seed in range(2):
                ep = world.render_episode(task, seed, kind="robot", frames=16, camera="side")
                rows.append((task, "robot", seed, evaluate_episode(ep)))
    for task, kind, seed, m in rows:
        print(task, kind, seed, {k: round(v, 4) for k, v in m.items()})
    human = [m for _, k, _, m in rows if k == "human"]
    print(
        "human: mean delta_avg",
        np.mean([m["delta_avg"] for m in human]),
        "mean ADE",
        np.mean([m["ade_m"] for m in human]),
        "IoU>=0.5",
        np.mean([m["iou"] >= 0.5 for m in human]),
    )


if __name__ == "__main__":
    main()
