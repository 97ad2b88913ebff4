"""Kitchen episodes over every registered task: ground-truth flow, visibility, success, robot demos."""

import mujoco
import numpy as np
import pytest

from jflow.errors import ConfigError, UnknownNameError
from jflow.sim import kitchen_constants as kc
from jflow.sim.episodes import KitchenWorld, render_episode
from jflow.sim.tasks import TASK_IDS, TASKS, get_task

ROBOT_TASKS = [t.task_id for t in TASKS if t.supports_robot_demo]
SMALL_PARTS = {"light_switch", "knob_1", "knob_2", "knob_3", "knob_4"}


@pytest.fixture(scope="module")
def world():
    w = KitchenWorld(128)
    yield w
    w.close()


def on_mask_fraction(ep, t, dilate):
    """Fraction of depth-test-visible points of frame t whose pixel (or a pixel within `dilate`)
    is segmented as the target object."""
    target = kc.SEGMENTATION_IDS[get_task(ep.task_id).target_object]
    seg = ep.segmentation[t]
    vis = ep.depth_visible[t]
    if not vis.any():
        return 1.0
    rc = np.floor(np.asarray(ep.clip.flow.tracks)[t][vis]).astype(int)[:, ::-1]
    hit = np.zeros(len(rc), bool)
    h, w = seg.shape
    for dy in range(-dilate, dilate + 1):
        for dx in range(-dilate, dilate + 1):
            r = np.clip(rc[:, 0] + dy, 0, h - 1)
            c = np.clip(rc[:, 1] + dx, 0, w - 1)
            hit |= seg[r, c] == target
    return hit.mean()


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_human_episode(world, task_id):
    task = get_task(task_id)
    ep = world.render_episode(
        task_id, seed=3, kind="human", frames=5, camera="front", num_points=256
    )
    clip = ep.clip.validate()
    flow = clip.flow
    assert flow.frame == "world" and flow.points.shape == (5, 256, 3)
    assert clip.video.shape == (5, 128, 128, 3) and ep.segmentation.shape == (5, 128, 128)
    assert clip.instruction in task.instructions and clip.camera_name == "front"
    assert not ep.gripper_mask.any()
    # Start fails the task's success test, the demo's end passes it.
    assert not task.is_success(ep.object_qpos[0]) and ep.success
    # The object moved, and the flow moved with it.
    assert np.abs(np.diff(np.asarray(flow.points), axis=0)).max() > 1e-3
    # flow.visible = depth test AND segmentation: always on the mask.
    target = kc.SEGMENTATION_IDS[task.target_object]
    assert np.array_equal(clip.object_mask, ep.segmentation[0] == target)
    # Visibility from the depth test alone projects onto the object's mask (checks pose,
    # intrinsics and depth conventions). Within one pixel for every task and frame; exactly for
    # objects larger than a few pixels (small parts mounted on a panel have ambiguous edges).
    for t in range(5):
        assert on_mask_fraction(ep, t, dilate=1) >= 0.95, (task_id, t)
        if task.target_object not in SMALL_PARTS:
            assert on_mask_fraction(ep, t, dilate=0) >= 0.85, (task_id, t)
    assert np.asarray(flow.visible)[0].mean() >= 0.1
    tracks = np.asarray(flow.tracks)[np.asarray(flow.visible)]
    assert ((tracks >= 0) & (tracks < 128)).all()


def test_visible_fraction_front_camera(world):
    """Visibility is not trivially empty: in frame 0 of the front camera at least 20% of the
    sampled surface points of every task's object are visible, and 30% on average over tasks.

    (Geometry bounds the fraction: only one face of a thin door can be seen, and the kettle's
    underside is never seen. docs/sim.md lists the measured fraction per task.)
    """
    per_task = {}
    for task_id in TASK_IDS:
        ep = world.render_episode(task_id, 0, frames=2, num_points=512)
        per_task[task_id] = np.asarray(ep.clip.flow.visible)[0].mean()
        assert per_task[task_id] >= 0.2, (task_id, per_task[task_id])
    assert np.mean(list(per_task.values())) >= 0.30, per_task


def test_episode_is_deterministic_and_seed_dependent(world):
    a = world.render_episode("open_microwave", 5, frames=3)
    b = world.render_episode("open_microwave", 5, frames=3)
    c = world.render_episode("open_microwave", 6, frames=3)
    assert np.array_equal(a.clip.video, b.clip.video)
    assert np.array_equal(np.asarray(a.clip.flow.points), np.asarray(b.clip.flow.points))
    assert not np.array_equal(a.clip.video, c.clip.video)
    assert not np.allclose(
        np.asarray(a.clip.camera_pose.wxyz_xyz), np.asarray(c.clip.camera_pose.wxyz_xyz)
    )


def test_no_randomization_gives_nominal_camera(world):
    ep = world.render_episode("open_slide_cabinet", 0, frames=2, randomize=False)
    pose = np.asarray(ep.clip.camera_pose.as_matrix())
    assert np.allclose(pose[:3, 3], kc.CAMERAS["front"].position, atol=1e-5)


@pytest.mark.parametrize("task_id", ROBOT_TASKS)
def test_robot_episode(world, task_id):
    task = get_task(task_id)
    ep = world.render_episode(task_id, seed=0, kind="robot", frames=5, camera="side")
    assert ep.success and ep.kind == "robot"
    assert ep.gripper_mask[0].any()
    assert ep.gripper_mask.any(axis=(1, 2)).all()
    # The gripper holds the handle in every frame.
    model, data = world.model, world.data
    idx = world.kitchen.qpos_indices(task.joints)
    ee, handle = model.site(kc.ROBOT_EE_SITE).id, model.site(task.grasp_site).id
    for t in range(5):
        qpos = model.key_qpos[0].copy()
        qpos[: kc.ROBOT_NQ] = ep.robot_qpos[t]
        qpos[idx] = ep.object_qpos[t]
        data.qpos[:] = qpos
        mujoco.mj_kinematics(model, data)
        assert np.linalg.norm(data.site_xpos[ee] - data.site_xpos[handle]) < 0.03
    # Visible flow excludes the gripper's pixels.
    vis = np.asarray(ep.clip.flow.visible)
    for t in range(5):
        rc = np.floor(np.asarray(ep.clip.flow.tracks)[t][vis[t]]).astype(int)[:, ::-1]
        assert not ep.gripper_mask[t][rc[:, 0], rc[:, 1]].any()


def test_bad_inputs(world):
    with pytest.raises(UnknownNameError):
        world.render_episode("open_fridge", 0)
    with pytest.raises(ConfigError):
        world.render_episode("open_microwave", 0, frames=1)
    with pytest.raises(UnknownNameError):
        world.render_episode("open_microwave", 0, camera="ceiling")
    with pytest.raises(UnknownNameError):
        world.render_episode("open_microwave", 0, kind="alien")
    with pytest.raises(ConfigError):
        world.render_episode("turn_on_light", 0, kind="robot")
    with pytest.raises(ConfigError):
        world.render_episode("open_microwave", 0, num_points=0)
    with pytest.raises(ConfigError):
        render_episode("open_microwave", 0, resolution=100)
    with pytest.raises(ConfigError):
        KitchenWorld(0)
