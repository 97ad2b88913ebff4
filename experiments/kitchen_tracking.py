"""Lucas-Kanade tracking, 3D lifting and moving-object detection against kitchen ground truth.

Renders 3 human-style episodes of each of the 6 default kitchen tasks (front camera) and 2
scripted robot episodes each of open_microwave and open_slide_cabinet (side camera), at
256x256 and 16 frames, and prints per episode and in total (issue 3, acceptance point 1):

* <delta^x_avg of Lucas-Kanade on the target object's ground-truth points (mean of the human
  episodes; target >= 0.8);
* the 3D ADE of those tracks lifted with the rendered depth, over the visible points (pooled
  over the human episodes' point-frames; target <= 1.5 cm);
* moving-object detection: box IoU >= 0.5 with the ground-truth object box on the human
  episodes (target: >= 90 %), and no detection query on the gripper on the robot episodes.
  The detection gets the rendered depth video, as :func:`jflow.tracking.extract.extract_flow`
  gives it a metric depth (``--detect-without-depth`` measures the video-only detection).

``python experiments/kitchen_tracking.py [--resolution 256] [--frames 16] [--seeds 3]
[--tasks turn_on_light ...] [--figure docs/images/extraction_kitchen.png]`` (about 2 minutes
on the 2-core machine; ``--tasks`` limits it to some tasks, ``--robot-seeds 0`` leaves the
robot episodes out). jflow.metrics.tracking_eval defines the measures;
tests/test_tracking_kitchen.py asserts them on a smaller set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from jflow.runtime import configure_rendering

ROBOT_TASKS = ("open_microwave", "open_slide_cabinet")
FIGURE = (("open_microwave", 0), ("turn_on_bottom_burner", 0), ("turn_on_light", 0))


def draw(episode, result, size: int = 512) -> np.ndarray:
    """Frame 0 as a ``size`` square: Lucas-Kanade tracks of the ground-truth points (cyan where
    visible), the ground-truth object box (yellow) and the detected box (red). Small objects
    are shown in a crop around them (the zoom is printed)."""
    from jflow.tracking.lucas_kanade import LucasKanadeTracker  # noqa: PLC0415

    clip = episode.clip
    video = np.asarray(clip.video)
    h, w = video.shape[1:3]
    vis0 = np.asarray(clip.flow.visible)[0]
    start = np.asarray(clip.flow.tracks)[0, vis0]
    queries = np.stack([np.zeros(len(start)), start[:, 1], start[:, 0]], axis=-1)
    tracked = LucasKanadeTracker().track(video, queries)
    gx0, gy0, gx1, gy1 = result.gt_box
    view = w if max(gx1 - gx0, gy1 - gy0) > w / 8 else w / 8  # a crop of w / 8 for small ones
    cx = float(np.clip((gx0 + gx1) / 2, view / 2, w - view / 2))
    cy = float(np.clip((gy0 + gy1) / 2, view / 2, h - view / 2))
    x_off, y_off, scale = cx - view / 2, cy - view / 2, size / view

    def px(x, y):
        return int(round((x - x_off) * scale)), int(round((y - y_off) * scale))

    crop = video[0][int(y_off) : int(y_off + view), int(x_off) : int(x_off + view)]
    interp = cv2.INTER_CUBIC if view == w else cv2.INTER_NEAREST
    img = np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interp))
    for track, seen in zip(tracked.tracks, tracked.visible, strict=True):
        pts = np.array([px(x, y) for x, y in track[seen]], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, (0, 255, 255), 1, cv2.LINE_AA)
    for box, colour in ((result.gt_box, (255, 255, 0)), (result.box, (255, 0, 0))):
        if box is not None:
            cv2.rectangle(img, px(box[0], box[1]), px(box[2], box[3]), colour, 2)
    text = f"{clip.task_id} (x{scale * w / size:.0f}): <d_avg {result.delta_avg:.2f}, IoU {result.iou:.2f}"
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(
            img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, thickness, cv2.LINE_AA
        )
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--robot-seeds", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all 6)")
    parser.add_argument(
        "--detect-without-depth",
        action="store_true",
        help="moving-object detection on the video alone (default: with the rendered depth)",
    )
    parser.add_argument("--figure", type=Path, default=None, help="write a PNG of 3 episodes")
    args = parser.parse_args()

    configure_rendering()  # Before MuJoCo creates its renderer.
    from jflow.data.kitchen_dataset import DEFAULT_TASKS
    from jflow.metrics.tracking_eval import evaluate_kitchen_episode, pooled_ade
    from jflow.sim.episodes import KitchenWorld

    tasks = DEFAULT_TASKS if args.tasks is None else tuple(args.tasks)
    jobs = [(task, "human", seed, "front") for task in tasks for seed in range(args.seeds)]
    jobs += [
        (task, "robot", seed, "side")
        for task in ROBOT_TASKS
        if task in tasks
        for seed in range(args.robot_seeds)
    ]
    rows = []
    panels: list = [None] * len(FIGURE)
    start = time.perf_counter()
    with KitchenWorld(resolution=args.resolution) as world:
        for task, kind, seed, camera in jobs:
            ep = world.render_episode(task, seed, kind=kind, frames=args.frames, camera=camera)
            depth = None if args.detect_without_depth else np.asarray(ep.clip.depth_video)
            r = evaluate_kitchen_episode(ep, detect_kwargs={"depth": depth})
            rows.append(r)
            if args.figure is not None and kind == "human" and (task, seed) in FIGURE:
                panels[FIGURE.index((task, seed))] = draw(ep, r)
            ade = "  n/a " if r.ade_m is None else f"{100 * r.ade_m:5.2f}cm"
            grip = "" if r.gripper_queries is None else f" gripper queries {r.gripper_queries}"
            print(
                f"{task:<32} {kind:<5} {seed}  <d_avg {r.delta_avg:.3f}  AJ {r.average_jaccard:.3f}"
                f"  ADE {ade} (kept {r.lifted_fraction:.0%})  IoU {r.iou:.2f}{grip}",
                flush=True,
            )
            if r.iou < 0.5 and kind == "human":
                print(f"    box {r.box} vs ground truth {r.gt_box}: {r.detection}")
    human = [r for r in rows if r.kind == "human"]
    robot = [r for r in rows if r.kind == "robot"]
    found = sum(r.iou >= 0.5 for r in human)
    per_episode = [r.ade_m for r in human if r.ade_m is not None]
    print(
        f"\nhuman episodes ({len(human)}, {args.resolution}x{args.resolution}, {args.frames} frames):"
        f"\n  <delta^x_avg  mean {np.mean([r.delta_avg for r in human]):.3f}"
        f" (min {min(r.delta_avg for r in human):.3f})"
        f"\n  3D ADE        pooled {100 * pooled_ade(human):.2f} cm,"
        f" mean of episodes {100 * np.mean(per_episode):.2f} cm"
        f" (max {100 * max(per_episode):.2f} cm)"
        f"\n  detection     IoU >= 0.5 on {found} of {len(human)} ({found / len(human):.0%}),"
        f" {'video only' if args.detect_without_depth else 'with depth'}"
    )
    by_task = {}
    for r in human:
        by_task.setdefault(r.task_id, []).append(r)
    for task, rs in by_task.items():
        print(
            f"    {task:<32} <d_avg {np.mean([r.delta_avg for r in rs]):.3f}"
            f"  IoU {' '.join(f'{r.iou:.2f}' for r in rs)}"
        )
    if robot:
        print(
            f"robot episodes ({len(robot)}): detection queries on the gripper "
            f"{[r.gripper_queries for r in robot]}"
        )
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.figure is not None and all(p is not None for p in panels):
        sheet = np.concatenate(panels, axis=1)[..., ::-1]
        cv2.imwrite(str(args.figure), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
