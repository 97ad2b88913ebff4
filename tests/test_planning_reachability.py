"""Batched MJX IK against the MuJoCo C-API reference, with joint limits."""

import jax.numpy as jnp
import jaxlie
import mujoco
import numpy as np
import pytest

from jflow.errors import ShapeError
from jflow.planning.reachability import (
    IKConfig,
    PandaReachability,
    mujoco_reference_ik,
    panda_reachability,
)
from jflow.robots import panda

CONFIG = IKConfig()  # shared with test_planning_grasps: one compilation


def _targets(count: int, seed: int):
    """Poses reached by random in-limit configurations, half of them moved out of reach."""
    model = panda.load_panda_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    lo, hi = panda.JOINT_LOWER, panda.JOINT_UPPER
    pos, rot = np.zeros((count, 3)), np.zeros((count, 3, 3))
    for i in range(count):
        data.qpos[:7] = np.clip(panda.HOME_QPOS + rng.uniform(-0.6, 0.6, 7), lo, hi)
        mujoco.mj_kinematics(model, data)
        pos[i] = data.site(panda.EE_SITE).xpos
        rot[i] = data.site(panda.EE_SITE).xmat.reshape(3, 3)
    far = np.arange(count) % 2 == 1
    # Beyond the arm's reach: along the ray from the shoulder, 1.3 m out (reach 0.855 m).
    out = pos[far] - panda.shoulder_position()
    pos[far] = panda.shoulder_position() + 1.3 * out / np.linalg.norm(out, axis=1, keepdims=True)
    return pos, rot, far


def _poses(pos, rot) -> jaxlie.SE3:
    return jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(jnp.asarray(rot, jnp.float32)), jnp.asarray(pos, jnp.float32)
    )


@pytest.fixture(scope="module")
def solved():
    pos, rot, far = _targets(24, seed=0)
    poses = _poses(pos, rot)
    return pos, rot, far, panda_reachability(CONFIG)(poses)


def test_mjx_ik_reaches_reachable_poses_and_rejects_far_ones(solved):
    _, _, far, out = solved
    reach = np.asarray(out.reachable)
    assert reach[~far].mean() >= 0.9  # a local method: most, not necessarily all
    assert not reach[far].any()
    assert np.all(np.asarray(out.position_error)[reach] < CONFIG.position_tolerance)
    q = np.asarray(out.qpos)
    assert np.all(q >= panda.JOINT_LOWER - 1e-6) and np.all(q <= panda.JOINT_UPPER + 1e-6)


def test_mjx_ik_agrees_with_the_mujoco_c_api_loop(solved):
    pos, rot, _, out = solved
    _, perr, _, reach = mujoco_reference_ik(pos[:8], rot[:8], CONFIG)
    np.testing.assert_array_equal(np.asarray(out.reachable)[:8], reach)
    np.testing.assert_allclose(np.asarray(out.position_error)[:8], perr, atol=2e-3)


def test_fk_of_the_solution_matches_the_target(solved):
    pos, _, far, out = solved
    model = panda.load_panda_model()
    data = mujoco.MjData(model)
    i = int(np.flatnonzero(np.asarray(out.reachable))[0])
    data.qpos[:7] = np.asarray(out.qpos[i])
    mujoco.mj_kinematics(model, data)
    assert np.linalg.norm(data.site(panda.EE_SITE).xpos - pos[i]) < CONFIG.position_tolerance


def test_strict_arithmetic_gives_the_same_decisions_as_fast_math(solved):
    """The library's solve uses XLA's CPU fast math (jflow.runtime.FAST_MATH_OPTIONS); compiled
    strictly, the same poses get the same decisions and errors within a millimetre."""
    pos, rot, _, out = solved
    poses = _poses(pos, rot)
    strict = PandaReachability(CONFIG, fast_math=False)(poses)
    np.testing.assert_array_equal(np.asarray(strict.reachable), np.asarray(out.reachable))
    reach = np.asarray(out.reachable)
    np.testing.assert_allclose(
        np.asarray(strict.position_error)[reach], np.asarray(out.position_error)[reach], atol=1e-3
    )


def test_non_finite_poses_are_refused_before_the_solve():
    """Under fast math a NaN need not reach the result, so the checker refuses it first."""
    pos, rot, _ = _targets(4, seed=1)
    poses = _poses(pos, rot)
    bad = jnp.asarray(poses.wxyz_xyz).at[2, 5].set(jnp.nan).at[3, 0].set(jnp.inf)
    with pytest.raises(ShapeError, match="2 of 4 contain NaN or Inf .first at flat index 2"):
        panda_reachability(CONFIG)(jaxlie.SE3(bad))
