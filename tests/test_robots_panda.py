"""The robot-only Panda model built from the installed Franka Kitchen assets."""

import mujoco
import numpy as np

from jflow.robots import panda


def test_robot_only_model_matches_the_kitchen_chain():
    model = panda.load_panda_model()
    assert model.ngeom == 0 and model.nu == 0  # kinematics only: no geoms, no actuators
    assert [model.joint(i).name for i in range(7)] == list(panda.ARM_JOINTS)
    np.testing.assert_allclose(model.jnt_range[:7, 0], panda.JOINT_LOWER)
    np.testing.assert_allclose(model.jnt_range[:7, 1], panda.JOINT_UPPER)
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
