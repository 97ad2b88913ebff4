"""The extraction pipeline end to end on real data (bridge_spoon .npz, LIBERO mp4)."""

import cv2
import jaxlie
import numpy as np
import pytest

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.flow.grid import flow_to_grid, grid_order
from jflow.flow.records import FlowClip
from jflow.geometry.camera import PinholeIntrinsics, unproject
from jflow.geometry.transforms import transform_points
from jflow.tracking.extract import (
    ExtractConfig,
    erode,
    extract_flow,
    extract_flow_from_file,
    extract_from_file,
    grid_points_in_mask,
)
from jflow.tracking.moving_object import box_iou

POSE = jaxlie.SE3.from_rotation_and_translation(
    jaxlie.SO3.from_rpy_radians(0.3, -0.2, 1.0), np.array([0.5, -0.1, 1.2])
)


@pytest.fixture(scope="module")
def bridge_path(shared_data):
    return shared_data / "bridge_spoon" / "episode.npz"


@pytest.fixture(scope="module")
def bridge(bridge_path):
    return dict(np.load(bridge_path))


@pytest.fixture(scope="module")
def bridge_clip(bridge_path):
    return extract_flow_from_file(bridge_path, ExtractConfig(median_window=3))


def test_bridge_npz_gives_a_valid_camera_frame_clip(bridge_clip, bridge):
    clip = bridge_clip
    assert isinstance(clip, FlowClip)
    clip.validate()
    flow = clip.flow
    assert flow.frame == "camera" and flow.points.shape == (28, 256, 3)
    assert clip.instruction == "put small spoon from basket to tray" and clip.task_id == "episode"
    # Bridge intrinsics: 55 deg vertical fov, centred (f ~ 245.9 px).
    assert float(clip.intrinsics.fx) == pytest.approx(245.9, abs=0.1)
    assert float(clip.intrinsics.cx) == 128.0
    # The object mask was given: points start inside the eroded spoon mask, on a 16x16 grid
    # in row-major order (the diffuser's grid layout is a reshape).
    tracks0 = np.asarray(flow.tracks[0])
    region = erode(bridge["object_mask"][0] > 0, 2)
    assert region[tracks0[:, 1].astype(int), tracks0[:, 0].astype(int)].all()
    np.testing.assert_array_equal(grid_order(tracks0), np.arange(256))
    assert flow_to_grid(flow).shape == (28, 16, 16, 4)
    # The spoon stays still (README): 90 % of its point-frames are visible; those tracks move
    # 0.15 px (median), 1.3 px at the 99th percentile and 4.4 px at most (two points near the
    # tip drift from frame 12, as the arm comes close); its depth is the monocular depth of the
    # file (0.85 .. 0.92 m).
    vis = np.asarray(flow.visible)
    assert vis.mean() > 0.85
    motion = np.linalg.norm(np.asarray(flow.tracks) - tracks0, axis=-1)[vis]
    assert np.median(motion) < 0.5 and np.percentile(motion, 99) < 2.5 and motion.max() < 6.0
    depth = np.asarray(flow.depth)[vis]
    assert 0.75 < depth.min() and depth.max() < 1.0
    # Camera-frame points are the unprojection of tracks and depth.
    expected = unproject(flow.tracks, flow.depth, clip.intrinsics)
    np.testing.assert_allclose(flow.points, expected, atol=1e-5)


def test_world_frame_with_a_camera_pose(bridge, bridge_clip):
    frames = 6
    extraction = extract_flow(
        bridge["rgb"][:frames],
        ExtractConfig(median_window=3),
        depth=bridge["depth_m"][:frames],
        object_mask=bridge["object_mask"][0],
        camera_pose=POSE,
    )
    clip = extraction.clip
    clip.validate()
    assert clip.flow.frame == "world"
    np.testing.assert_allclose(clip.camera_pose.wxyz_xyz, POSE.wxyz_xyz, atol=1e-6)
    camera = clip.flow.to_camera(POSE)
    np.testing.assert_allclose(transform_points(POSE, camera.points), clip.flow.points, atol=1e-5)
    # The same points as the camera-frame extraction of the whole clip, over the first frames
    # (the median over 3 frames differs only at the last frame kept here).
    np.testing.assert_allclose(
        camera.points[: frames - 1], bridge_clip.flow.points[: frames - 1], atol=1e-4
    )


def test_bridge_without_object_mask_finds_the_moving_arm(bridge, tmp_path):
    path = tmp_path / "bridge_rgbd.npz"
    np.savez(path, rgb=bridge["rgb"], depth_m=bridge["depth_m"])
    extraction = extract_from_file(path)
    assert extraction.detection is not None
    assert box_iou(extraction.box_xyxy, bridge["moving_object_bboxes_xyxy"][1]) > 0.5
    clip = extraction.require_clip().validate()
    # The 16x16 grid lies in the detected box.
    x0, y0, x1, y1 = extraction.box_xyxy
    t0 = np.asarray(clip.flow.tracks[0])
    assert np.all((t0[:, 0] > x0) & (t0[:, 0] < x1) & (t0[:, 1] > y0) & (t0[:, 1] < y1))
    # The arm moves: median track displacement well above the spoon's.
    moved = np.linalg.norm(np.asarray(clip.flow.tracks[-1]) - t0, axis=-1)
    assert np.median(moved) > 5.0


def test_relative_depth_is_aligned_to_the_reference(bridge, tmp_path):
    frames = 5
    depth = bridge["depth_m"][:frames]
    path = tmp_path / "relative.npz"
    np.savez(
        path,
        frames=bridge["rgb"][:frames],
        relative_depth=(depth - 0.3) / 2.5,
        reference_depth=depth[0],
        object_mask=bridge["object_mask"][:frames],
    )
    clip = extract_flow_from_file(path)
    np.testing.assert_allclose(clip.depth, depth[0], atol=1e-4)
    np.testing.assert_allclose(clip.depth_video, depth, atol=1e-4)
    scale_only = extract_flow_from_file(path, ExtractConfig(depth_alignment="scale"))
    assert np.abs(scale_only.depth - depth[0]).max() > 1e-3  # a scale alone cannot fit a shift


def test_libero_mp4_gives_tracks_only(shared_data):
    path = shared_data / "libero10" / "agentview_demo_0.mp4"
    config = ExtractConfig(frame_stride=3, max_frames=30)
    extraction = extract_from_file(path, config)
    assert extraction.clip is None
    assert extraction.tracks.shape == (30, 256, 2) and extraction.visible.shape == (30, 256)
    # Measured: 38 % of point-frames visible (the tracked robot arm blurs and self-occludes,
    # and the tracker's appearance check drops points whose patch changes).
    assert extraction.visible.mean() > 0.35
    assert np.isfinite(extraction.tracks).all()
    assert extraction.detection is not None and extraction.detection.moving.sum() >= 8
    # What moves in the first 90 frames is the robot arm, above the table (measured box
    # [42, 0, 86, 30] of the 128x128 frame; the table starts near y = 45).
    assert extraction.box_xyxy[3] < 56 and extraction.box_xyxy[2] - extraction.box_xyxy[0] > 30
    with pytest.raises(DataError, match="depth is required"):
        extraction.require_clip()
    with pytest.raises(DataError, match="agentview_demo_0.mp4 has no depth"):
        extract_flow_from_file(path, config)


def test_grid_points_in_mask():
    mask = np.zeros((40, 50), bool)
    mask[5:30, 10:45] = True
    pts = grid_points_in_mask(mask, (4, 5))
    assert pts.shape == (20, 2)
    assert mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    np.testing.assert_array_equal(grid_order(pts, (4, 5)), np.arange(20))
    with pytest.raises(DataError, match="empty"):
        grid_points_in_mask(np.zeros((10, 10)), (2, 2))
    with pytest.raises(DataError, match="fewer than"):
        grid_points_in_mask(mask[:6, :12], (16, 16))


def test_extraction_errors(bridge, tmp_path):
    video = bridge["rgb"][:3]
    with pytest.raises(ShapeError, match="uint8"):
        extract_flow(video.astype(np.float32))
    with pytest.raises(ShapeError, match=r"\[T, H, W, 3\]"):
        extract_flow(video[..., 0])
    with pytest.raises(DataError, match="object mask is empty"):
        extract_flow(video, object_mask=np.zeros((256, 256), bool))
    with pytest.raises(ShapeError, match="object_mask"):
        extract_flow(video, object_mask=np.ones((10, 10), bool))
    with pytest.raises(ShapeError, match="depth must be"):
        extract_flow(video, depth=bridge["depth_m"][:2], object_mask=bridge["object_mask"][0])
    with pytest.raises(DataError, match="reference_depth"):
        extract_flow(
            video, relative_depth=bridge["depth_m"][:3], object_mask=bridge["object_mask"][0]
        )
    with pytest.raises(ShapeError, match="intrinsics"):
        extract_flow(
            video,
            depth=bridge["depth_m"][:3],
            object_mask=bridge["object_mask"][0],
            intrinsics=PinholeIntrinsics.from_fovy(55.0, 128, 128),
        )
    with pytest.raises(DataError, match="nothing moved significantly"):
        extract_flow(np.repeat(video[:1], 3, axis=0))
    with pytest.raises(ConfigError, match="camera_motion"):
        extract_flow(video, ExtractConfig(camera_motion="projective"))
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="nope.npz"):
        extract_from_file(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="garbage.mp4"):
        extract_from_file(garbage)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        extract_from_file(bad_npz)
    with pytest.raises(DataError, match="expected an .npz or a video"):
        extract_from_file(tmp_path / "clip.gif")
    no_frames = tmp_path / "noframes.npz"
    np.savez(no_frames, depth=bridge["depth_m"][:2])
    with pytest.raises(DataError, match="no frames"):
        extract_from_file(no_frames)


def test_camera_motion_stage_leaves_a_still_camera_alone(bridge):
    frames = 8
    kwargs = dict(depth=bridge["depth_m"][:frames], object_mask=bridge["object_mask"][0])
    still = extract_flow(
        bridge["rgb"][:frames], ExtractConfig(camera_motion="homography"), **kwargs
    )
    plain = extract_flow(bridge["rgb"][:frames], ExtractConfig(), **kwargs)
    np.testing.assert_array_equal(still.camera_transforms, np.tile(np.eye(3), (frames, 1, 1)))
    np.testing.assert_array_equal(still.tracks, plain.tracks)
    # A known shift of the whole video (a camera pan) is removed from the object's tracks.
    shift = np.array([3.0, -2.0])
    panned = np.stack(
        [
            cv2.warpAffine(
                f,
                np.float32([[1, 0, t * shift[0]], [0, 1, t * shift[1]]]),
                (256, 256),
                borderMode=cv2.BORDER_REFLECT,
            )
            for t, f in enumerate(bridge["rgb"][:frames])
        ]
    )
    moved = extract_flow(panned, ExtractConfig(camera_motion="affine"), **kwargs)
    raw_motion = np.median(np.linalg.norm(moved.tracks[-1] - moved.tracks[0], axis=-1))
    assert raw_motion < 1.0  # the spoon is still once the pan is removed (raw pan: 25 px)
