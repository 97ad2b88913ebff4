"""Joint limits of the reachability IK: the kitchen env's limits, and solutions on a limit that
pass the joint-space planner's float64 limit check."""

import jax.numpy as jnp
import jaxlie
import mujoco
import numpy as np
import pytest

from jflow.errors import GeometryError
from jflow.planning.joint_trajectory import make_joint_problem
from jflow.planning.reachability import IKConfig, panda_reachability, seed_configurations
from jflow.planning.synthetic import synthetic_rigid_flow
from jflow.robots import panda
from jflow.robots.kinematics import float32_limits, panda_kinematics

CONFIG = IKConfig()  # the config of test_planning_reachability: one shared compilation


def test_float32_limits_round_inwards():
    lo, hi = float32_limits(panda.JOINT_LOWER, panda.JOINT_UPPER)
    assert lo.dtype == np.float32 and hi.dtype == np.float32
    # Inside the float64 limits, and the nearest float32 values that are.
    assert np.all(lo.astype(np.float64) >= panda.JOINT_LOWER)
    assert np.all(hi.astype(np.float64) <= panda.JOINT_UPPER)
    assert np.all(lo.astype(np.float64) - panda.JOINT_LOWER < 3e-7)
    assert np.all(panda.JOINT_UPPER - hi.astype(np.float64) < 3e-7)
    # Plain rounding moves joint 1's lower limit outwards: the bug this guards against.
    assert float(np.float32(panda.JOINT_LOWER[0])) < panda.JOINT_LOWER[0]
    np.testing.assert_array_equal(panda_kinematics().lower, lo)


@pytest.fixture(scope="module")
def flow():
    return synthetic_rigid_flow("hinge", num_frames=4, num_points=16, seed=2)[0]


def test_joint_problem_accepts_a_start_exactly_on_the_float32_limits(flow):
    kin = panda_kinematics()
    q = np.where(np.arange(7) % 2 == 0, kin.lower, kin.upper)  # every joint on a limit
    make_joint_problem(flow, q)  # no GeometryError
    with pytest.raises(GeometryError, match="joints \\[5\\]"):  # the env clips joint 6 at 0
        make_joint_problem(flow, np.where(np.arange(7) == 5, -0.2, q))


def test_ik_keeps_joint_6_in_the_env_range_and_its_solution_passes_the_limit_check(flow):
    # A pose the model reaches with joint 6 (index 5) at -0.5 rad, which the kitchen env
    # cannot command (it clips that joint to [0, 3.8]): the IK clips joint 6 at 0.
    model = panda.load_arm_model()
    data = mujoco.MjData(model)
    q_target = panda.HOME_QPOS.copy()
    q_target[5] = -0.5
    data.qpos[:] = q_target
    mujoco.mj_kinematics(model, data)
    pose = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(jnp.asarray(data.site_xmat[0].reshape(3, 3), jnp.float32)),
        jnp.asarray(data.site_xpos[0], jnp.float32),
    )
    out = panda_reachability(CONFIG)(jaxlie.SE3(pose.wxyz_xyz[None]))
    q = np.asarray(out.qpos[0], np.float64)
    assert q[5] >= 0.0
    assert np.all(q >= panda.JOINT_LOWER) and np.all(q <= panda.JOINT_UPPER)  # no tolerance
    make_joint_problem(flow, q)  # the joint-space planner's start check passes
    # The seeds respect the env's range as well.
    assert np.all(seed_configurations(CONFIG)[:, 5] >= 0.0)
