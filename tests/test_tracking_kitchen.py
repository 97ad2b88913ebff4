"""Tracking, 3D lifting and moving-object detection against kitchen ground truth (issue 3,
acceptance point 1), on a subset of experiments/kitchen_tracking.py: 4 human-style episodes
and 1 robot episode at 256x256, 16 frames.

Measured on these episodes (2026-11-21): <delta^x_avg 0.830 / 0.964 / 0.898 / 0.860, 3D ADE
0.99 / 0.15 / 0.34 / 1.44 cm (pooled 0.71 cm), box IoU from the video alone 0.87 / 0.92 / 0.80 /
0.87 (0.80 / 0.89 / 0.71 / 0.68 before the change checks), no detection query on the gripper of
the robot episode (which finds the moving arm: IoU 0.31 with the door). The light switch (a 6x8
px lever turning out of the image plane) is found only with depth: IoU 0.66 on seed 0, 0.45
from the video alone. The full set (18 human episodes, experiments/kitchen_tracking.py, which
gives the detection the rendered depth): <delta^x_avg 0.840, ADE 1.01 cm, IoU >= 0.5 on 18 of
18 (15 of 18 from the video alone; docs/extraction.md).
"""

import numpy as np
import pytest

from jflow.metrics.tracking_eval import evaluate_kitchen_episode, pooled_ade
from jflow.sim.episodes import KitchenWorld
from jflow.tracking.lifting import lift_tracks

HUMAN = (
    ("open_microwave", 0),
    ("open_slide_cabinet", 0),
    ("move_kettle_to_top_left_burner", 1),
    ("turn_on_bottom_burner", 0),
)


@pytest.fixture(scope="module")
def world():
    with KitchenWorld(resolution=256) as w:
        yield w


@pytest.fixture(scope="module")
def human(world):
    return [world.render_episode(task, seed, frames=16) for task, seed in HUMAN]


@pytest.fixture(scope="module")
def human_results(human):
    return [evaluate_kitchen_episode(ep) for ep in human]


def test_lucas_kanade_tracks_the_target(human_results):
    deltas = [r.delta_avg for r in human_results]
    print("<delta^x_avg", [round(d, 3) for d in deltas])
    assert np.mean(deltas) >= 0.8
    assert min(deltas) > 0.75


def test_lifted_tracks_are_within_1_5_cm(human_results):
    ade = pooled_ade(human_results)
    print(f"pooled ADE {100 * ade:.2f} cm", [round(100 * r.ade_m, 2) for r in human_results])
    assert ade <= 0.015
    # The lifting keeps a fair share of the point-frames the ground truth shows.
    assert all(r.lifted_fraction > 0.3 for r in human_results)


def test_ground_truth_tracks_lift_to_the_ground_truth_points(human):
    """The conventions agree: ground-truth tracks lifted with the rendered depth land on the
    ground-truth points (measured mean error 0.3 mm on the sliding door to 4.2 mm on the small,
    rounded burner knob, where the ground-truth depth test lets in points at grazing angles;
    depth-edge points are masked)."""
    from jflow.geometry.transforms import transform_points  # noqa: PLC0415

    for ep in human:
        clip = ep.clip
        flow = clip.flow
        lifted = lift_tracks(
            np.asarray(flow.tracks),
            np.asarray(flow.visible),
            np.asarray(clip.depth_video),
            clip.intrinsics,
            max_depth_m=10.0,
        )
        gt = np.asarray(transform_points(clip.camera_pose.inverse(), np.asarray(flow.points)))
        vis = np.asarray(lifted.visible)
        err = np.linalg.norm(np.asarray(lifted.points) - gt, axis=-1)[vis]
        assert vis.sum() > 0.8 * np.asarray(flow.visible).sum()
        print(f"{clip.task_id}: ground-truth tracks lifted, mean error {1000 * err.mean():.1f} mm")
        assert err.mean() < 0.006, (clip.task_id, err.mean())


def test_detection_finds_the_target(human_results):
    ious = [r.iou for r in human_results]
    print("IoU", [round(v, 2) for v in ious], [r.detection for r in human_results])
    assert all(v >= 0.5 for v in ious)


def test_detection_with_depth_finds_the_light_switch(world):
    """The lever is lost by the tracker as it turns and drags the plate beside it along; the
    pixels whose depth grows (where it was) give its frame-0 box (measured IoU 0.66; 0.45 from
    the video alone)."""
    ep = world.render_episode("turn_on_light", 0, frames=16)
    depth = np.asarray(ep.clip.depth_video)
    r = evaluate_kitchen_episode(ep, detect_kwargs={"depth": depth})
    print(f"light switch: box {r.box} vs ground truth {r.gt_box}, IoU {r.iou:.2f}")
    assert r.iou >= 0.6


def test_detection_leaves_the_gripper_out(world):
    ep = world.render_episode("open_microwave", 0, kind="robot", frames=16, camera="side")
    assert ep.gripper_mask[0].sum() > 50  # the gripper is in view
    r = evaluate_kitchen_episode(ep)
    print(f"robot episode: {r.detection}; IoU with the door {r.iou:.2f}")
    assert r.gripper_queries == 0
    assert r.delta_avg > 0.7
