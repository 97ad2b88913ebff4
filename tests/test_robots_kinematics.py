"""MJX kinematics of the arm against MuJoCo's C API: pose, Jacobians, manipulability gradient."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from jflow.robots import panda
from jflow.robots.kinematics import (
    geometric_jacobian,
    joint_limit_margin,
    log_manipulability_gradient,
    manipulability,
    panda_kinematics,
    point_jacobian,
)


def _c_api(model, data, q):
    """Site pose, its 6x7 Jacobian and log manipulability from the C API (float64)."""
    data.qpos[:] = q
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    jacp, jacr = np.zeros((3, 7)), np.zeros((3, 7))
    mujoco.mj_jacSite(model, data, jacp, jacr, 0)
    jac = np.concatenate([jacp, jacr])
    return data.site_xpos[0].copy(), data.site_xmat[0].reshape(3, 3).copy(), jac


def test_arm_model_is_the_kitchen_chain_without_fingers():
    arm, full = panda.load_arm_model(), panda.load_panda_model()
    assert (arm.nbody, arm.njnt, arm.nq) == (8, 7, 7) and full.nq == 9
    da, df = mujoco.MjData(arm), mujoco.MjData(full)
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.uniform(panda.JOINT_LOWER, panda.JOINT_UPPER)
        da.qpos[:], df.qpos[:7] = q, q
        mujoco.mj_kinematics(arm, da)
        mujoco.mj_kinematics(full, df)
        np.testing.assert_allclose(da.site(panda.EE_SITE).xpos, df.site(panda.EE_SITE).xpos)
        np.testing.assert_allclose(da.site(panda.EE_SITE).xmat, df.site(panda.EE_SITE).xmat)


def test_mjx_kinematics_and_analytic_derivatives_match_the_c_api():
    kin = panda_kinematics()
    model, data = kin.mj_model, mujoco.MjData(kin.mj_model)

    @jax.jit
    def evaluate(q, points):
        s = kin.forward(q)
        return (
            s.position,
            s.rotation,
            geometric_jacobian(s),
            point_jacobian(s, points),
            manipulability(s),
            log_manipulability_gradient(s),
        )

    rng = np.random.default_rng(1)
    for _ in range(4):
        q = rng.uniform(panda.JOINT_LOWER + 0.2, panda.JOINT_UPPER - 0.2)
        pos, rot, jac = _c_api(model, data, q)
        # Points held by the gripper: offsets in the site frame.
        offsets = rng.normal(scale=0.1, size=(5, 3))
        points = pos + offsets @ rot.T
        out = evaluate(jnp.asarray(q, jnp.float32), jnp.asarray(points, jnp.float32))
        mpos, mrot, mjac, pjac, m, grad = (np.asarray(a, np.float64) for a in out)
        np.testing.assert_allclose(mpos, pos, atol=1e-5)
        np.testing.assert_allclose(mrot, rot, atol=1e-5)
        np.testing.assert_allclose(mjac, jac, atol=1e-5)
        # d(point)/dq by central differences of the C-API kinematics.
        fd = np.zeros((5, 3, 7))
        for j in range(7):
            dq = np.zeros(7)
            dq[j] = 1e-6
            p1, r1, _ = _c_api(model, data, q + dq)
            p0, r0, _ = _c_api(model, data, q - dq)
            fd[:, :, j] = ((p1 + offsets @ r1.T) - (p0 + offsets @ r0.T)) / 2e-6
        np.testing.assert_allclose(pjac, fd, atol=1e-4)

        # Yoshikawa's manipulability and the manipulator-Hessian gradient of its log.
        def log_m(x):
            return 0.5 * np.log(np.linalg.det((j := _c_api(model, data, x)[2]) @ j.T))

        assert abs(np.log(m) - log_m(q)) < 1e-4
        fd_grad = np.array([(log_m(q + 1e-6 * e) - log_m(q - 1e-6 * e)) / 2e-6 for e in np.eye(7)])
        np.testing.assert_allclose(grad, fd_grad, atol=2e-3 * max(1.0, np.abs(fd_grad).max()))


def test_joint_limit_margin():
    lo, hi = panda.JOINT_LOWER, panda.JOINT_UPPER
    q = np.stack([(lo + hi) / 2, lo + 0.01, hi + 0.02])
    margin = np.asarray(joint_limit_margin(jnp.asarray(q)))
    assert margin[0] > 0.5
    np.testing.assert_allclose(margin[1:], [0.01, -0.02], atol=1e-6)
