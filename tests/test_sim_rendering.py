"""Kitchen model, cameras and rendering conventions: metric depth, poses, segmentation ids."""

import os

import mujoco
import numpy as np
import pytest

from jflow.errors import ConfigError, UnknownNameError
from jflow.geometry.camera import unproject_to_world
from jflow.sim import kitchen_constants as kc
from jflow.sim.cameras import camera_intrinsics, camera_pose, camera_pose_matrix
from jflow.sim.model import home_qpos, load_kitchen
from jflow.sim.rendering import KitchenRenderer, procedural_texture

assert os.environ.get("MUJOCO_GL") in ("egl", "osmesa", "glfw")


@pytest.fixture(scope="module")
def scene():
    kitchen = load_kitchen()
    renderer = KitchenRenderer(kitchen, 128)
    data = mujoco.MjData(renderer.model)
    data.qpos[:] = home_qpos(renderer.kitchen)
    mujoco.mj_kinematics(renderer.model, data)
    mujoco.mj_camlight(renderer.model, data)
    yield renderer, data
    renderer.close()


def test_model_has_cameras_and_objects():
    kitchen = load_kitchen()
    for name in kc.CAMERA_NAMES:
        assert kitchen.camera_id(name) >= 0
    for obj in (
        "microwave_door",
        "slide_door",
        "hinge_right_door",
        "kettle",
        "light_switch",
        "knob_2",
    ):
        assert kitchen.visual_geoms[obj], obj
    assert set(np.unique(kitchen.geom_segmentation)) <= set(range(len(kc.SEGMENTATION_OBJECTS)))
    assert load_kitchen() is kitchen  # cached


@pytest.mark.parametrize("camera", ["front", "side"])
def test_depth_is_metric_z(scene, camera):
    """Unproject box-geom pixels with the intrinsics and OpenCV pose: they lie on the box surface."""
    renderer, data = scene
    model = renderer.model
    _, depth, gid = renderer.render(data, camera, geom_ids=True)
    k = camera_intrinsics(model, camera, 128)
    pose = camera_pose(model, data, camera)
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    pts = np.asarray(unproject_to_world(np.stack([xs, ys], -1).astype(np.float32), depth, k, pose))
    errors = []
    for g in np.unique(gid):
        if g < 0 or model.geom_type[g] != mujoco.mjtGeom.mjGEOM_BOX:
            continue
        local = (pts[gid == g] - data.geom_xpos[g]) @ data.geom_xmat[g].reshape(3, 3)
        q = np.abs(local) - model.geom_size[g]
        dist = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
        errors.append(np.abs(dist))
    errors = np.concatenate(errors)
    assert len(errors) > 500
    assert np.percentile(errors, 99) < 5e-3  # millimetres: depth is z in meters, pose is right


def test_camera_pose_convention(scene):
    renderer, data = scene
    model = renderer.model
    pose = np.asarray(camera_pose(model, data, "front").as_matrix())
    assert np.allclose(pose, camera_pose_matrix(data, model.camera("front").id), atol=1e-5)
    spec = kc.CAMERAS["front"]
    forward = np.asarray(spec.target) - np.asarray(spec.position)
    forward /= np.linalg.norm(forward)
    assert np.allclose(pose[:3, 3], spec.position, atol=1e-5)
    assert np.dot(pose[:3, 2], forward) > 0.999  # OpenCV z looks at the target
    assert pose[2, 1] < 0  # OpenCV y points down in the image: world -z-ish


def test_segmentation_ids_and_robot_hiding(scene):
    renderer, data = scene
    _, _, seg = renderer.render(data, "side", show_robot=True)
    _, _, seg_hidden = renderer.render(data, "side", show_robot=False)
    robot = {kc.SEGMENTATION_IDS["robot"], kc.SEGMENTATION_IDS["gripper"]}
    assert robot & set(np.unique(seg).tolist())
    assert not robot & set(np.unique(seg_hidden).tolist())
    for obj in ("microwave_door", "kettle", "hinge_right_door"):
        assert (seg_hidden == kc.SEGMENTATION_IDS[obj]).any(), obj


def test_rgb_depth_shapes_and_textures(scene):
    renderer, data = scene
    rgb, depth, seg = renderer.render(data, "front", show_robot=False)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert depth.shape == (128, 128) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert seg.shape == (128, 128) and seg.dtype == np.int32
    renderer.randomize_textures(np.random.default_rng(1))
    rgb2, _, _ = renderer.render(data, "front", show_robot=False)
    kettle = seg == kc.SEGMENTATION_IDS["kettle"]
    assert np.abs(rgb2[kettle].astype(int) - rgb[kettle].astype(int)).mean() > 5
    tex = procedural_texture(np.random.default_rng(0), 32)
    assert tex.shape == (192, 32, 3) and tex.std() > 10


def test_bad_inputs():
    kitchen = load_kitchen()
    with pytest.raises(ConfigError):
        KitchenRenderer(kitchen, 100)
    with pytest.raises(ConfigError):
        camera_intrinsics(kitchen.model, "front", 60)
    with pytest.raises(UnknownNameError):
        camera_intrinsics(kitchen.model, "ceiling", 64)
