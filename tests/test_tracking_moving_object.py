"""Moving-object detection on the real bridge_spoon episode."""

import numpy as np
import pytest

from jflow.errors import DataError, ShapeError
from jflow.tracking.lucas_kanade import LucasKanadeTracker
from jflow.tracking.moving_object import box_iou, detect_moving_object, largest_cluster

# Measured with the default LK tracker and settings: box [76, 4, 140, 116], IoU 0.57 with the
# authors' arm box [62, 0, 132, 93] (their CoTracker3 found it).
ARM_IOU_BOUND = 0.5


@pytest.fixture(scope="module")
def bridge(shared_data):
    return dict(np.load(shared_data / "bridge_spoon" / "episode.npz"))


def test_detection_finds_the_arm_without_a_gripper_mask(bridge):
    found = detect_moving_object(bridge["rgb"], LucasKanadeTracker())
    arm_box = bridge["moving_object_bboxes_xyxy"][1]
    iou = box_iou(found.box_xyxy, arm_box)
    print(f"detected box {found.box_xyxy.tolist()}, IoU with the arm box {iou:.3f}")
    assert iou > ARM_IOU_BOUND
    assert found.moving.sum() >= 8
    assert found.queries.shape == (1024, 3)
    # Every kept point moved more than the threshold, and lies in the box on frame 0.
    assert np.all(found.displacement[found.moving] > 10.0)
    first = found.stabilized[found.moving, 0]
    assert np.all((first >= found.box_xyxy[:2] - 1e-4) & (first <= found.box_xyxy[2:] + 1e-4))


def test_gripper_mask_excludes_the_arm_points(bridge):
    gripper = bridge["gripper_mask"] > 0
    arm_box = bridge["moving_object_bboxes_xyxy"][1]
    # With the arm masked out nothing else moves (the spoon stays still in this clip): measured
    # 6 of 949 queries move more than 10 px, so the default detection refuses.
    with pytest.raises(DataError, match="too few moving points"):
        detect_moving_object(bridge["rgb"], LucasKanadeTracker(), gripper_mask=gripper)
    found = detect_moving_object(
        bridge["rgb"], LucasKanadeTracker(), gripper_mask=gripper, min_moving_points=1
    )
    # No query starts inside the gripper mask: the 75 grid cells whose centre is on it are gone.
    rows = found.queries[:, 1].astype(int)
    cols = found.queries[:, 2].astype(int)
    assert not gripper[rows, cols].any()
    assert len(found.queries) == 1024 - 75
    assert found.moving.sum() < 8
    assert box_iou(found.box_xyxy, arm_box) < 0.2


def test_a_still_video_has_too_few_moving_points(bridge):
    still = np.repeat(bridge["rgb"][:1], 4, axis=0)
    with pytest.raises(DataError, match="too few moving points"):
        detect_moving_object(still, LucasKanadeTracker())


def test_largest_cluster_drops_isolated_cells():
    cells = np.zeros((8, 8), bool)
    cells[1:4, 1:4] = True
    cells[7, 7] = True
    kept = largest_cluster(cells)
    assert kept.sum() == 9 and not kept[7, 7]


def test_detection_rejects_bad_input(bridge):
    with pytest.raises(ShapeError, match="gripper_mask"):
        detect_moving_object(
            bridge["rgb"][:3], LucasKanadeTracker(), gripper_mask=np.ones((10, 10))
        )
    with pytest.raises(ShapeError, match="uint8"):
        detect_moving_object(bridge["rgb"][:3].astype(float), LucasKanadeTracker())
