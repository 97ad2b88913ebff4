"""Bad input through the whole extraction chain (issue 3, acceptance point 5): an empty video, a
single frame, queries outside the frame, all points occluded, depth all zero or NaN, masks of
the wrong size. Each gives a clear jflow error or a documented empty result, never a NaN."""

import numpy as np
import pytest

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.geometry.camera import PinholeIntrinsics
from jflow.metrics.flow3d import flow_errors
from jflow.metrics.tapvid import tapvid_metrics
from jflow.metrics.tracking_eval import compare_with_reference, static_displacement
from jflow.tracking.extract import ExtractConfig, extract_flow
from jflow.tracking.lifting import align_depth, lift_tracks
from jflow.tracking.lucas_kanade import LucasKanadeTracker
from jflow.tracking.moving_object import detect_moving_object, scan_motion

K = PinholeIntrinsics.from_fovy(55.0, 64, 64)


@pytest.fixture(scope="module")
def video():
    """A textured 64x64 clip of 5 frames: a random image shifted 1 px per frame."""
    rng = np.random.default_rng(0)
    base = (rng.random((80, 80, 3)) * 255).astype(np.uint8)
    base = np.repeat(np.repeat(base, 2, axis=0), 2, axis=1)  # 2 px blobs
    return np.stack([base[8 : 8 + 64, 8 + t : 8 + t + 64] for t in range(5)])


@pytest.fixture(scope="module")
def queries():
    ys, xs = np.meshgrid(np.arange(12, 52, 8), np.arange(12, 52, 8), indexing="ij")
    return np.stack([np.zeros(ys.size), ys.ravel() + 0.5, xs.ravel() + 0.5], 1)


def test_empty_video():
    tracker = LucasKanadeTracker()
    empty = np.zeros((0, 64, 64, 3), np.uint8)
    with pytest.raises(ShapeError, match="empty"):
        tracker.track(empty, np.zeros((0, 3)))
    with pytest.raises(ShapeError, match="empty"):
        tracker.track(np.zeros((3, 0, 64, 3), np.uint8), np.zeros((0, 3)))
    with pytest.raises(ShapeError, match="at least 2 frames"):
        detect_moving_object(empty, tracker)
    with pytest.raises(ShapeError, match="at least 2 frames"):
        extract_flow(empty)


def test_single_frame(video, queries):
    one = video[:1]
    # The tracker's documented result: each track is its query point, visible.
    result = LucasKanadeTracker().track(one, queries)
    assert result.tracks.shape == (len(queries), 1, 2) and result.visible.all()
    np.testing.assert_allclose(result.tracks[:, 0], queries[:, [2, 1]], atol=1e-5)
    with pytest.raises(ShapeError, match="at least 2 frames"):
        detect_moving_object(one, LucasKanadeTracker())
    with pytest.raises(ShapeError, match="at least 2 frames"):
        extract_flow(one, object_mask=np.ones((64, 64), bool))
    occ = np.zeros((len(queries), 1), bool)
    with pytest.raises(ConfigError, match="no frame is evaluated"):
        tapvid_metrics(queries, occ, result.tracks, occ, result.tracks, "first", (64, 64))


def test_no_queries_give_empty_tracks(video):
    result = LucasKanadeTracker().track(video, np.zeros((0, 3)))
    assert result.tracks.shape == (0, 5, 2) and result.visible.shape == (0, 5)


def test_queries_outside_the_frame(video):
    tracker = LucasKanadeTracker()
    for bad in ([0, 10, 70], [0, -1, 10], [0, 65, 10]):
        with pytest.raises(ShapeError, match="inside the 64x64 image"):
            tracker.track(video, np.array([bad], float))
    with pytest.raises(ShapeError, match="query frame"):
        tracker.track(video, np.array([[5, 10, 10]], float))
    with pytest.raises(ShapeError, match="NaN"):
        tracker.track(video, np.array([[0, np.nan, 10]]))


def test_all_points_occluded(video, queries):
    # Every frame after the first is replaced: every point fails the checks at once and, with
    # no tracked neighbour to follow, holds its place; nothing is NaN.
    rng = np.random.default_rng(1)
    lost = video.copy()
    lost[1:] = rng.integers(0, 256, lost[1:].shape, dtype=np.uint8)
    result = LucasKanadeTracker().track(lost, queries)
    assert not result.visible[:, 1:].any() and np.isfinite(result.tracks).all()
    np.testing.assert_allclose(result.tracks[:, -1], queries[:, [2, 1]], atol=1e-4)
    # Lifting occluded points: none visible, every array finite.
    depth = np.full((5, 64, 64), 1.5, np.float32)
    flow = lift_tracks(
        result.tracks.transpose(1, 0, 2), np.zeros((5, len(queries)), bool), depth, K
    )
    assert not np.asarray(flow.visible).any() and np.isfinite(np.asarray(flow.points)).all()
    # Metrics: the ground truth shows nothing -> documented zeros with num_visible == 0.
    occ = np.ones((len(queries), 5), bool)
    m = tapvid_metrics(queries, occ, result.tracks, occ, result.tracks, "first", (64, 64))
    assert m["num_visible"] == 0.0 and m["average_pts_within_thresh"] == 0.0
    assert all(np.isfinite(v) for v in m.values())
    with pytest.raises(DataError, match="no visible point"):
        flow_errors(np.zeros((5, 2, 3)), np.zeros((5, 2, 3)), np.zeros((5, 2), bool))
    with pytest.raises(DataError, match="visible both on frame 0 and later"):
        static_displacement(np.zeros((5, 2, 3)), np.zeros((5, 2), bool))
    # A reference tracker that never sees a point on frame 0 cannot be compared with.
    reference = np.zeros((5, 2, 3))
    with pytest.raises(DataError, match="not visible on frame 0"):
        compare_with_reference(np.zeros((2, 5, 2)), np.ones((2, 5), bool), reference, (64, 64))


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_depth_all_zero_or_nan(video, fill):
    depth = np.full((5, 64, 64), fill, np.float32)
    tracks = np.tile(np.array([[[10.5, 20.5], [40.5, 30.5]]], np.float32), (5, 1, 1))
    flow = lift_tracks(tracks, np.ones((5, 2), bool), depth, K, median_window=3)
    assert not np.asarray(flow.visible).any()
    assert np.isfinite(np.asarray(flow.points)).all() and np.all(np.asarray(flow.depth) == 0)
    # Through the pipeline: a valid clip whose points are all not visible (its depth is 0).
    extraction = extract_flow(video, depth=depth, object_mask=np.ones((64, 64), bool), intrinsics=K)
    clip = extraction.require_clip().validate()
    assert not np.asarray(clip.flow.visible).any()
    assert np.isfinite(np.asarray(clip.flow.points)).all() and np.all(clip.depth_video == 0)
    # Aligning a relative depth to an invalid reference is impossible: a clear error.
    with pytest.raises(DataError, match="valid depth"):
        align_depth(np.ones((64, 64)), depth[0], np.ones((64, 64), bool))
    with pytest.raises(DataError, match="valid depth"):
        extract_flow(
            video,
            relative_depth=np.ones((5, 64, 64), np.float32),
            reference_depth=depth[0],
            object_mask=np.ones((64, 64), bool),
        )


def test_masks_of_the_wrong_size(video):
    tracker = LucasKanadeTracker()
    small = np.ones((32, 32), bool)
    with pytest.raises(ShapeError, match=r"gripper_mask must be \[H, W\] = \(64, 64\)"):
        detect_moving_object(video, tracker, gripper_mask=small)
    with pytest.raises(ShapeError, match="gripper_mask"):
        scan_motion(video, tracker, gripper_mask=small)
    with pytest.raises(ShapeError, match="gripper_mask"):
        extract_flow(video, gripper_mask=small)
    with pytest.raises(ShapeError, match="object_mask"):
        extract_flow(video, object_mask=small)
    with pytest.raises(ShapeError, match=r"\[H, W\]"):
        align_depth(np.ones((64, 64)), np.ones((64, 64)), small)
    with pytest.raises(ShapeError, match="depth"):
        lift_tracks(np.zeros((5, 1, 2)), np.ones((5, 1), bool), np.ones((5, 32, 32)), K)
    with pytest.raises(ConfigError, match="max_depth_step"):
        extract_flow(video, ExtractConfig(max_depth_step=0.0))
