"""Flow extraction on the real bridge_spoon episode (issue 3, acceptance point 2).

Prints:

* moving-object detection with the gripper mask (the spoon stays still, so nothing moves
  significantly) and without it (the moving arm; IoU with the authors' box 1);
* Lucas-Kanade tracks started from the first-frame positions of the authors' CoTracker3 tracks
  of box 1, against those tracks (TAP-Vid <delta^x_avg with CoTracker3 as the reference), on all
  1024 points and on the points CoTracker3 shows moving more than 10 px;
* the spoon's lifted 3D points (16x16 grid in its mask, monocular depth of the file): finite
  wherever visible, and their median 3D displacement over the clip with and without the
  temporal median filter of the depth (the spoon is still: this is depth noise).

``python experiments/bridge_tracking.py [path/to/episode.npz]`` (about 15 s); the numbers are
asserted by tests/test_tracking_bridge.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from jflow.errors import DataError
from jflow.metrics.tracking_eval import (
    compare_with_reference,
    reference_queries,
    static_displacement,
)
from jflow.tracking.extract import ExtractConfig, extract_flow
from jflow.tracking.lucas_kanade import LucasKanadeTracker
from jflow.tracking.moving_object import box_iou, detect_moving_object, scan_motion

DEFAULT = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bridge_spoon" / "episode.npz"
)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    data = dict(np.load(path))
    video, depth = data["rgb"], data["depth_m"]
    tracker = LucasKanadeTracker()
    arm_box = data["moving_object_bboxes_xyxy"][1]
    start = time.perf_counter()

    print("moving-object detection")
    try:
        found = detect_moving_object(video, tracker, gripper_mask=data["gripper_mask"])
        print(f"  with the gripper mask: found {found.box_xyxy.tolist()} ({found.scan.summary()})")
    except DataError as err:
        print(f"  with the gripper mask: {err}")
    scan = scan_motion(video, tracker, gripper_mask=data["gripper_mask"])
    print(f"    ({len(scan.queries)} queries left after the mask, significant: {scan.significant})")
    found = detect_moving_object(video, tracker)
    print(
        f"  without it: box {found.box_xyxy.tolist()}, IoU {box_iou(found.box_xyxy, arm_box):.2f}"
        f" with the authors' arm box {arm_box.tolist()} ({found.scan.summary()})"
    )

    reference = data["cotracker_tracks_xyv"][1]  # [T, N, 3] = (x, y, visible)
    h, w = video.shape[1:3]
    result = tracker.track(video, reference_queries(reference, (w, h)))
    m = compare_with_reference(result.tracks, result.visible, reference, (w, h))
    print("Lucas-Kanade against CoTracker3 (box 1, CoTracker3 as the reference)")
    for name in ("all", "moving"):
        r = m[name]
        within = " ".join(f"{r[f'pts_within_{t}']:.2f}" for t in (1, 2, 4, 8, 16))
        label = "all points" if name == "all" else "moving > 10 px"
        print(
            f"  {label:<15} {int(r['num_points']):5d} points  <delta^x_avg {r['average_pts_within_thresh']:.3f}"
            f"  (within 1/2/4/8/16 px: {within})  AJ {r['average_jaccard']:.3f}"
            f"  OA {r['occlusion_accuracy']:.3f}"
        )

    print("the spoon (object mask given, 16x16 grid, monocular depth)")
    for window in (1, 5):
        extraction = extract_flow(
            video,
            ExtractConfig(median_window=window),
            depth=depth,
            object_mask=data["object_mask"][0],
        )
        flow = extraction.require_clip().flow
        points, visible = np.asarray(flow.points), np.asarray(flow.visible)
        finite = bool(np.isfinite(points[visible]).all())
        moved = static_displacement(points, visible)
        print(
            f"  median_window {window}: visible {visible.mean():.1%} of point-frames, finite where"
            f" visible: {finite}; median 3D displacement from frame 0 {100 * moved:.2f} cm"
        )
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
