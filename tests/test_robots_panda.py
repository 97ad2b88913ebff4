"""The robot-only Panda model built from the installed Franka Kitchen assets."""

import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from jflow.robots import panda


def test_robot_only_model_matches_the_kitchen_chain():
    model = panda.load_panda_model()
    assert model.ngeom == 0 and model.nu == 0  # kinematics only: no geoms, no actuators
    assert [model.joint(i).name for i in range(7)] == list(panda.ARM_JOINTS)
    np.testing.assert_allclose(model.jnt_range[:7, 0], panda.JOINT_LOWER_MJCF)
    np.testing.assert_allclose(model.jnt_range[:7, 1], panda.JOINT_UPPER_MJCF)
    data = mujoco.MjData(model)
    data.qpos[panda.arm_qpos_indices(model)] = panda.HOME_QPOS
    mujoco.mj_kinematics(model, data)
    base = data.body(panda.BASE_BODY)
    np.testing.assert_allclose(base.xpos, panda.BASE_POS, atol=1e-9)
    np.testing.assert_allclose(
        base.xmat.reshape(3, 3), panda.world_from_base_matrix()[:3, :3], atol=1e-9
    )
    ee = data.site(panda.EE_SITE).xpos
    # The home pose holds the gripper in front of the robot, within Franka's reach.
    assert 0.3 < np.linalg.norm(ee - panda.shoulder_position()) < panda.MAX_REACH


def test_geometry_model_has_the_collision_meshes():
    model = panda.load_panda_model(with_geoms=True)
    assert model.nmesh >= 10 and model.ngeom > 20


def test_planning_limits_are_the_intersection_of_model_actuator_and_env_limits():
    root = panda.kitchen_franka_dir() / "franka_assets"
    ctrl = {
        a.get("joint"): [float(v) for v in a.get("ctrlrange").split()]
        for a in ET.parse(root / "actuator.xml").getroot().iter("position")
    }
    np.testing.assert_allclose(
        [ctrl[j] for j in panda.ARM_JOINTS], np.stack([panda.CTRL_LOWER, panda.CTRL_UPPER], axis=1)
    )
    config = ET.parse(root / "franka_config.xml").getroot()  # what the kitchen env clips to
    bounds = [
        [float(v) for v in config.find(f"qpos{i}").get("pos_bound").split()] for i in range(7)
    ]
    np.testing.assert_allclose(bounds, np.stack([panda.ENV_POS_LOWER, panda.ENV_POS_UPPER], 1))
    lower = np.max([panda.JOINT_LOWER_MJCF, panda.CTRL_LOWER, panda.ENV_POS_LOWER], axis=0)
    upper = np.min([panda.JOINT_UPPER_MJCF, panda.CTRL_UPPER, panda.ENV_POS_UPPER], axis=0)
    np.testing.assert_array_equal(panda.JOINT_LOWER, lower)
    np.testing.assert_array_equal(panda.JOINT_UPPER, upper)
    # Only joint 6 changes: the model allows -1.6573 rad, the env clips it at 0.
    assert panda.JOINT_LOWER[5] == 0.0 and panda.JOINT_LOWER_MJCF[5] == -1.6573
    assert np.sum(panda.JOINT_LOWER != panda.JOINT_LOWER_MJCF) == 1
    np.testing.assert_array_equal(panda.JOINT_UPPER, panda.JOINT_UPPER_MJCF)
    assert np.all((panda.HOME_QPOS > panda.JOINT_LOWER) & (panda.HOME_QPOS < panda.JOINT_UPPER))


def test_arm_model_carries_only_what_kinematics_reads():
    model = panda.load_arm_model()
    assert (model.nbody, model.njnt, model.nsite) == (8, 7, 1)
    assert model.ngeom == model.nmesh == model.nu == model.nmat == model.ntex == 0
