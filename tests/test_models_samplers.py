"""Noise schedules against their closed forms, and the sampler mathematics with oracle
predictors (independent of the network)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.errors import ConfigError, UnknownNameError
from jflow.models import (
    FAST_COMPILE,
    ObjectiveConfig,
    alphas_cumprod,
    cfg_combine,
    ddim_loop,
    flow_loop,
)
from jflow.models.samplers import clamp_first_frame, ddim_timesteps

N = 200
fast_jit = partial(jax.jit, compiler_options=FAST_COMPILE)
X0 = jax.random.normal(jax.random.key(3), (2, 4, 8, 8, 4))


def test_linear_schedule_closed_form():
    obj = ObjectiveConfig(schedule="linear", num_train_steps=1000, beta_start=1e-4, beta_end=0.02)
    a = alphas_cumprod(obj)
    betas = np.linspace(1e-4, 0.02, 1000)
    assert a.shape == (1000,)
    np.testing.assert_allclose(a[0], 1 - 1e-4, rtol=1e-12)
    np.testing.assert_allclose(a[-1], np.prod(1 - betas), rtol=1e-10)
    assert 3e-5 < a[-1] < 5e-5  # the well-known DDPM endpoint (~4.0e-5)
    assert np.all(np.diff(a) < 0)


def test_cosine_schedule_closed_form():
    n, s = 1000, 0.008
    a = alphas_cumprod(ObjectiveConfig(schedule="cosine", num_train_steps=n, cosine_s=s))
    f = lambda t: np.cos((t / n + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    t = np.arange(n)
    expected = f(t + 1) / f(0)
    # identical except where beta hits the 0.999 clip at the very end
    np.testing.assert_allclose(a[:-5], expected[:-5], rtol=1e-9)
    assert a[-1] < 1e-6 and a[0] > 0.9999


def _eps_oracle(table, kind="ddpm_eps"):
    def predict(x, t):
        a = table[t.astype(jnp.int32)][:, None, None, None, None]
        eps = (x - jnp.sqrt(a) * X0) / jnp.sqrt(1 - a)
        if kind == "ddpm_eps":
            return eps
        return jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * X0  # v

    return predict


@pytest.mark.parametrize(("kind", "schedule"), [("ddpm_eps", "linear"), ("ddpm_v", "cosine")])
def test_ddim_with_oracle_reconstructs_x0_deterministically(kind, schedule):
    table = jnp.asarray(
        alphas_cumprod(ObjectiveConfig(schedule=schedule, num_train_steps=N)), jnp.float32
    )
    ts = ddim_timesteps(N, N)
    np.testing.assert_array_equal(ts, np.arange(N)[::-1])
    x_T = jax.random.normal(jax.random.key(0), X0.shape)
    run = fast_jit(
        lambda x, key: ddim_loop(
            _eps_oracle(table, kind), x, table, ts, kind=kind, eta=0.0, rng=key
        )
    )
    a = run(x_T, jax.random.key(1))
    b = run(x_T, jax.random.key(2))  # eta = 0: the rng must not matter
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), np.asarray(X0), atol=2e-3)


def test_ddim_few_steps_and_ancestral_with_oracle():
    table = jnp.asarray(alphas_cumprod(ObjectiveConfig(num_train_steps=N)), jnp.float32)
    x_T = jax.random.normal(jax.random.key(0), X0.shape)
    run = fast_jit(
        lambda x, eta: ddim_loop(
            _eps_oracle(table), x, table, ddim_timesteps(N, 10), eta=eta, rng=jax.random.key(5)
        )
    )
    for eta in (0.0, 1.0):
        np.testing.assert_allclose(np.asarray(run(x_T, eta)), np.asarray(X0), atol=2e-3)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_flow_matching_with_oracle_velocity_transports_x0(method):
    def velocity(z, t):
        t = t[:, None, None, None, None]
        eps = (z - (1 - t) * X0) / t
        return eps - X0

    z1 = jax.random.normal(jax.random.key(0), X0.shape)
    for steps in (1, 4):
        out = flow_loop(velocity, z1, steps, method=method)
        np.testing.assert_allclose(np.asarray(out), np.asarray(X0), atol=1e-5)


def test_sample_shift_moves_the_euler_times_towards_noise():
    # With dz/dt = t, Euler from t = 1 accumulates -sum_i (t_i - t_{i+1}) t_i over its grid:
    # uniform [1, 1/2, 0] gives -(1/2 + 1/4); shift 3 maps 1/2 to 3/4: [1, 3/4, 0] gives
    # -(1/4 + 9/16).
    def velocity(z, t):
        return jnp.broadcast_to(t[:, None, None, None, None], z.shape)

    z1 = jnp.zeros((2, 1, 1, 1, 4))
    for shift, expected in ((1.0, -0.75), (3.0, -0.8125)):
        out = flow_loop(velocity, z1, 2, time_shift=shift)
        np.testing.assert_allclose(np.asarray(out), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="sample_shift"):
        ObjectiveConfig(sample_shift=0.0)


def test_first_frame_clamp_pins_initial_points():
    init = X0[:, 0] + 1.0  # differs from the oracle's frame 0

    def velocity(z, t):
        t = t[:, None, None, None, None]
        return (z - (1 - t) * X0) / t - X0

    z1 = jax.random.normal(jax.random.key(0), X0.shape)
    out = flow_loop(velocity, z1, 3, clamp=clamp_first_frame(init))
    np.testing.assert_array_equal(np.asarray(out[:, 0]), np.asarray(init))
    np.testing.assert_allclose(np.asarray(out[:, 1:]), np.asarray(X0[:, 1:]), atol=1e-5)


def test_cfg_scale_one_is_the_conditional_prediction():
    c = jax.random.normal(jax.random.key(0), (3, 5))
    u = jax.random.normal(jax.random.key(1), (3, 5))
    np.testing.assert_allclose(np.asarray(cfg_combine(c, u, 1.0)), np.asarray(c), atol=1e-6)
    np.testing.assert_allclose(np.asarray(cfg_combine(c, u, 0.0)), np.asarray(u), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(cfg_combine(c, u, 3.0)), np.asarray(u + 3 * (c - u)), atol=1e-5
    )


def test_ddim_timesteps_validation():
    assert list(ddim_timesteps(100, 4)) == [99, 66, 33, 0]
    with pytest.raises(ConfigError):
        ddim_timesteps(100, 101)


def test_displacement_target_round_trip_and_zero_first_frame():
    from jflow.models.objectives import from_target_space, to_target_space

    obj = ObjectiveConfig(target="displacement", displacement_scale=2.0)
    x = to_target_space(X0, obj)
    np.testing.assert_array_equal(np.asarray(x[:, 0, ..., :3]), 0.0)
    np.testing.assert_allclose(
        np.asarray(x[:, 3, ..., :3]),
        2.0 * np.asarray(X0[:, 3, ..., :3] - X0[:, 0, ..., :3]),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(np.asarray(x[..., 3]), np.asarray(X0[..., 3]))
    back = from_target_space(x, X0[:, 0], obj)
    np.testing.assert_allclose(np.asarray(back), np.asarray(X0), atol=1e-6)
    absolute = ObjectiveConfig(target="absolute")
    assert to_target_space(X0, absolute) is X0


def test_target_is_validated_and_old_configs_read_as_absolute():
    with pytest.raises(ConfigError, match="diffusion target"):
        ObjectiveConfig(target="velocity")
    with pytest.raises(ConfigError, match="displacement_scale"):
        ObjectiveConfig(displacement_scale=0.0)
    old = ObjectiveConfig().to_dict()
    del old["target"]
    assert ObjectiveConfig.from_dict(old).target == "absolute"
    assert ObjectiveConfig.from_dict(ObjectiveConfig().to_dict()).target == "displacement"


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sample_prediction_oracle_transports_x0(method):
    from jflow.models.objectives import flow_velocity

    obj = ObjectiveConfig(flow_prediction="sample")
    z1 = jax.random.normal(jax.random.key(5), X0.shape)
    out = fast_jit(
        lambda z: flow_loop(lambda zz, t: flow_velocity(X0, zz, t, obj), z, 4, method=method)
    )(z1)
    np.testing.assert_allclose(np.asarray(out), np.asarray(X0), atol=1e-4)
    with pytest.raises(ConfigError, match="flow-matching prediction"):
        ObjectiveConfig(flow_prediction="noise")
    old = ObjectiveConfig().to_dict()
    del old["flow_prediction"]
    assert ObjectiveConfig.from_dict(old).flow_prediction == "velocity"


def test_preconditioning_unit_variance_and_exact_oracle():
    from jflow.models.objectives import (
        channel_weights,
        network_input,
        network_prediction,
        preconditioning,
        uses_preconditioning,
    )

    obj = ObjectiveConfig(precondition=True, sigma_data=0.5)
    assert uses_preconditioning(obj)
    assert not uses_preconditioning(ObjectiveConfig())  # off by default
    assert not uses_preconditioning(ObjectiveConfig(flow_prediction="velocity"))
    assert not uses_preconditioning(ObjectiveConfig(kind="ddpm_eps"))
    k1, k2 = jax.random.split(jax.random.key(3))
    x0 = 0.5 * jax.random.normal(k1, (4, 8, 8, 8, 4))
    eps = jax.random.normal(k2, x0.shape)
    for t_val in (0.05, 0.5, 0.95):
        t = jnp.full((4,), t_val)
        z = (1 - t_val) * x0 + t_val * eps
        c_in, c_skip, c_out = (float(c[0]) for c in preconditioning(t, 0.5))
        # The network's input and its ideal output both have unit variance.
        assert abs(float(jnp.var(network_input(z, t, obj))) - 1.0) < 0.05
        oracle = (x0 - c_skip * z) / c_out
        assert abs(float(jnp.var(oracle)) - 1.0) < 0.05
        np.testing.assert_allclose(
            np.asarray(network_prediction(oracle, z, t, obj)), np.asarray(x0), atol=1e-5
        )
    c_in, c_skip, c_out = (float(c[0]) for c in preconditioning(jnp.ones(1), 0.5))
    assert (c_skip, c_out) == (0.0, 0.5)  # pure noise: a regression, no skip
    np.testing.assert_allclose(
        np.asarray(channel_weights(ObjectiveConfig(visibility_weight=0.25), 4)),
        [1.0, 1.0, 1.0, 0.25],
    )
    with pytest.raises(ConfigError, match="visibility_weight"):
        ObjectiveConfig(visibility_weight=-1.0)
    with pytest.raises(ConfigError, match="sigma_data"):
        ObjectiveConfig(sigma_data=0.0)
    old = ObjectiveConfig().to_dict()
    del old["precondition"], old["visibility_weight"]
    legacy = ObjectiveConfig.from_dict(old)
    assert (legacy.precondition, legacy.visibility_weight) == (False, 1.0)


def test_time_shift_moves_training_times_towards_noise():
    from jflow.models.objectives import shifted_time

    u = jnp.linspace(0.0, 1.0, 101)
    np.testing.assert_array_equal(np.asarray(shifted_time(u, 1.0)), np.asarray(u))
    t = np.asarray(shifted_time(u, 3.0))
    assert t[0] == 0.0 and t[-1] == pytest.approx(1.0)
    assert np.all(np.diff(t) > 0)  # monotone
    assert t[50] == pytest.approx(0.75)  # k / (1 + k)
    # Uniform u: the share of times above 1/2 grows from 50% to 75% with k = 3.
    draws = np.asarray(shifted_time(jax.random.uniform(jax.random.key(0), (20000,)), 3.0))
    assert abs(float((draws > 0.5).mean()) - 0.75) < 0.01
    with pytest.raises(ConfigError, match="time_shift"):
        ObjectiveConfig(time_shift=0.0)
    legacy = ObjectiveConfig().to_dict()
    del legacy["time_shift"]
    assert ObjectiveConfig.from_dict(legacy).time_shift == 1.0


def test_pseudo_huber_point_loss_weighs_points_by_error_norm():
    from jflow.models.objectives import prediction_loss

    target = jnp.zeros((1, 2, 1, 2, 4))
    # Point 0 errs by (3, 4, 0) * s on both frames, point 1 by nothing; visibility exact.
    pred = target.at[:, :, 0, 0, :2].set(jnp.array([3.0, 4.0]))
    c = 0.03
    huber = ObjectiveConfig(point_loss="pseudo_huber", huber_c=c, visibility_weight=2.0)
    mse = ObjectiveConfig(visibility_weight=2.0)
    for s in (0.001, 1.0, 10.0):
        got = float(prediction_loss(s * pred, target, huber))
        per_point = np.sqrt((5.0 * s) ** 2 + c**2) - c  # point 0; point 1 adds 0
        assert got == pytest.approx(per_point / 2 / 3.0, rel=1e-5)  # mean of 2 points, 1 + w
        # 2 frames x 25 s^2 over 16 entries, divided by the mean weight 5/4.
        expected_mse = 2 * (5.0 * s) ** 2 / 16 / 1.25
        assert float(prediction_loss(s * pred, target, mse)) == pytest.approx(
            expected_mse, rel=1e-5
        )
    # Large errors: linear in the error (a 10x error costs ~10x), squared under the MSE.
    ratio = float(prediction_loss(10 * pred, target, huber) / prediction_loss(pred, target, huber))
    assert 10.0 < ratio < 10.1  # (50 - c) / (5 - c)
    mse_ratio = prediction_loss(10 * pred, target, mse) / prediction_loss(pred, target, mse)
    assert float(mse_ratio) == pytest.approx(100.0, rel=1e-5)
    # Visibility keeps its weighted squared error.
    vis = target.at[..., 3].set(0.5)
    assert float(prediction_loss(vis, target, huber)) == pytest.approx(2.0 * 0.25 / 3.0)
    with pytest.raises(UnknownNameError, match="point loss"):
        ObjectiveConfig(point_loss="l1")
    with pytest.raises(ConfigError, match="huber_c"):
        ObjectiveConfig(point_loss="pseudo_huber", huber_c=0.0)
    legacy = ObjectiveConfig().to_dict()
    del legacy["point_loss"]
    assert ObjectiveConfig.from_dict(legacy).point_loss == "mse"
