"""Training objectives of the flow model: DDPM (epsilon or v prediction) and flow matching.

Conventions (``x0`` the clean normalised flow, ``eps ~ N(0, I)``):

- DDPM: integer ``t`` in ``[0, N)``, ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with
  ``a_t = alphas_cumprod[t]``; the network gets ``t`` and predicts ``eps`` (``"ddpm_eps"``) or
  ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (``"ddpm_v"``).
- Flow matching (rectified flow): ``t ~ U(0, 1)``, ``z_t = (1 - t) x0 + t eps`` (t = 1 is pure
  noise); the network gets ``t * N`` and predicts the clean sample ``x0``
  (``flow_prediction="sample"``, the default; velocity ``(z_t - x0_hat) / t``) or the velocity
  ``eps - x0`` (``"velocity"``); sampling integrates ``dz/dt`` from t = 1 to 0.

``x0`` is what ``ObjectiveConfig.target`` says (:func:`to_target_space`): by default the
displacement from frame 0, scaled, so the known initial points are not re-generated.

Noise schedules (``alphas_cumprod``):

- linear: ``betas = linspace(beta_start, beta_end, N)``, ``a_t = prod_{s<=t} (1 - beta_s)``;
- cosine (Nichol & Dhariwal 2021): ``f(t) = cos(((t / N) + s) / (1 + s) * pi / 2) ** 2``,
  ``a_t = f(t + 1) / f(0)`` (betas clipped at 0.999).

With probability ``text_drop_prob`` an example's instruction is dropped (its text mask
zeroed) so the same network also learns the unconditional prediction for classifier-free
guidance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from jflow.errors import ShapeError
from jflow.models.conditioning import Conditioning
from jflow.models.config import ObjectiveConfig

BATCH_TENSOR_KEYS = ("flow", "text_tokens", "text_mask", "rgb", "depth")


# ---------------------------------------------------------------------- schedules


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008) -> np.ndarray:
    """``a_t`` for ``t = 0..N-1`` of the cosine schedule (betas clipped at 0.999)."""
    steps = np.arange(num_steps + 1, dtype=np.float64)
    f = np.cos(((steps / num_steps) + s) / (1 + s) * np.pi / 2) ** 2
    abar = f / f[0]
    betas = np.clip(1 - abar[1:] / abar[:-1], 0.0, 0.999)
    return np.cumprod(1 - betas)


def alphas_cumprod(config: ObjectiveConfig) -> np.ndarray:
    """``[N]`` float64 cumulative products of ``1 - beta`` of the configured schedule."""
    if config.schedule == "linear":
        return np.cumprod(
            1 - linear_betas(config.num_train_steps, config.beta_start, config.beta_end)
        )
    return cosine_alphas_cumprod(config.num_train_steps, config.cosine_s)


# ---------------------------------------------------------------------- parameterisations


def predictions_from_output(
    kind: str, output: jax.Array, x: jax.Array, abar: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(x0_hat, eps_hat)`` from a DDPM network output at ``x_t`` with ``abar = a_t``
    (broadcastable to ``x``)."""
    sa, s1 = jnp.sqrt(abar), jnp.sqrt(1 - abar)
    if kind == "ddpm_eps":
        eps = output
        x0 = (x - s1 * eps) / sa
    elif kind == "ddpm_v":
        x0 = sa * x - s1 * output
        eps = s1 * x + sa * output
    else:
        raise ValueError(f"not a DDPM objective: {kind}")
    return x0, eps


def conditioning_from_tensors(batch: dict) -> Conditioning:
    """The :class:`Conditioning` of a batch of tensors (initial points = ``flow[:, 0]``)."""
    missing = [k for k in BATCH_TENSOR_KEYS if k not in batch]
    if missing:
        raise ShapeError(
            f"the batch lacks {', '.join(missing)}; loss_fn needs {', '.join(BATCH_TENSOR_KEYS)} "
            "(encode batch['instruction'] with TextEncoder for text_tokens / text_mask)"
        )
    flow = batch["flow"]
    return Conditioning(
        text_tokens=batch["text_tokens"],
        text_mask=batch["text_mask"],
        rgb=batch["rgb"],
        depth=batch["depth"],
        initial_points=flow[:, 0],
    )


def batch_tensors(batch: dict, text_encoder) -> dict:
    """The arrays :func:`loss_fn` needs from a pipeline batch (strings dropped, instruction
    encoded by ``text_encoder``, a :class:`~jflow.models.TextEncoder`), as numpy arrays."""
    tokens, mask = text_encoder.encode(batch["instruction"])
    return {
        "flow": np.asarray(batch["flow"], np.float32),
        "rgb": np.asarray(batch["rgb"]),
        "depth": np.asarray(batch["depth"], np.float32),
        "text_tokens": tokens,
        "text_mask": mask,
    }


def to_target_space(
    flow: Float[Array, "B T h w C"], config: ObjectiveConfig
) -> Float[Array, "B T h w C"]:
    """The normalised grid flow -> what the diffusion runs over (``config.target``).

    ``"displacement"``: channels (u, v, depth) become ``scale * (x_t - x_0)`` (frame 0 is
    zero); visibility stays as it is.
    """
    if config.target == "absolute":
        return flow
    disp = (flow[..., :3] - flow[:, :1, ..., :3]) * config.displacement_scale
    return jnp.concatenate([disp, flow[..., 3:]], axis=-1)


def from_target_space(
    x: Float[Array, "B T h w C"],
    initial_points: Float[Array, "B h w C"],
    config: ObjectiveConfig,
) -> Float[Array, "B T h w C"]:
    """Inverse of :func:`to_target_space` given frame 0 (``initial_points``, normalised)."""
    if config.target == "absolute":
        return x
    xyz = initial_points[:, None, ..., :3] + x[..., :3] / config.displacement_scale
    return jnp.concatenate([xyz, x[..., 3:]], axis=-1)


def uses_preconditioning(config: ObjectiveConfig) -> bool:
    """Whether the network of this objective runs inside the sample preconditioning
    (``ObjectiveConfig.precondition``: flow matching with sample prediction only)."""
    return (
        config.kind == "flow_matching"
        and config.flow_prediction == "sample"
        and config.precondition
    )


def preconditioning(
    t: Float[Array, " B"], sigma_data: float
) -> tuple[Float[Array, " B"], Float[Array, " B"], Float[Array, " B"]]:
    """``(c_in, c_skip, c_out)`` at flow-matching times ``t`` (``ObjectiveConfig.precondition``)."""
    sd2 = sigma_data**2
    s2 = (1 - t) ** 2 * sd2 + t**2
    s = jnp.sqrt(s2)
    return 1.0 / s, (1 - t) * sd2 / s2, t * sigma_data / s


def network_input(z: jax.Array, t: Float[Array, " B"], config: ObjectiveConfig) -> jax.Array:
    """What the network sees at ``z_t``: ``c_in(t) z_t`` under preconditioning, else ``z_t``."""
    if not uses_preconditioning(config):
        return z
    c_in, _, _ = preconditioning(t, config.sigma_data)
    return _bcast(c_in) * z


def network_prediction(
    raw: jax.Array, z: jax.Array, t: Float[Array, " B"], config: ObjectiveConfig
) -> jax.Array:
    """The network's prediction from its raw output at ``z_t``: ``c_skip z_t + c_out raw``
    under preconditioning, else the raw output."""
    if not uses_preconditioning(config):
        return raw
    _, c_skip, c_out = preconditioning(t, config.sigma_data)
    return _bcast(c_skip) * z + _bcast(c_out) * raw


def channel_weights(config: ObjectiveConfig, channels: int) -> jax.Array:
    """Loss weight per flow channel: 1 for (u, v, depth), ``visibility_weight`` after."""
    return jnp.asarray([1.0] * 3 + [config.visibility_weight] * (channels - 3), jnp.float32)


def prediction_loss(
    pred: Float[Array, "B T h w C"], target: Float[Array, "B T h w C"], config: ObjectiveConfig
) -> Float[Array, ""]:
    """The training loss between a prediction and its target (``config.point_loss``).

    ``"mse"``: the channel-weighted mean of the squared errors, normalised by the mean weight.
    ``"pseudo_huber"``: per point and frame, ``sqrt(|e_uvd|^2 + c^2) - c`` of the (u, v, depth)
    error plus the weighted squared visibility error, averaged and divided by ``1 +
    visibility_weight`` (the position term counts as one weight-1 channel).
    """
    err = (pred - target) ** 2
    weights = channel_weights(config, err.shape[-1])
    if config.point_loss == "mse":
        return (err * weights).mean() / weights.mean()
    c = config.huber_c
    position = jnp.sqrt(err[..., :3].sum(-1) + c**2) - c
    visible = (err[..., 3:] * weights[3:]).sum(-1)
    return (position + visible).mean() / (1.0 + weights[3:].sum())


def flow_velocity(
    output: jax.Array, z: jax.Array, t: jax.Array, config: ObjectiveConfig
) -> jax.Array:
    """The rectified-flow velocity ``dz/dt`` from a network output at ``z_t`` (``t [B]``).

    ``"sample"`` prediction: ``(z - x0_hat) / t`` (t is kept above 1e-4; samplers never
    evaluate at t = 0); ``"velocity"``: the output itself.
    """
    if config.flow_prediction == "velocity":
        return output
    return (z - output) / _bcast(jnp.maximum(t, 1e-4))


def shifted_time(u: Float[Array, " B"], shift: float) -> Float[Array, " B"]:
    """``k u / (1 + (k - 1) u)`` (``ObjectiveConfig.time_shift``): monotone on [0, 1], fixes
    0 and 1, maps ``u = 1/2`` to ``k / (1 + k)``, and is exactly ``u`` at ``k = 1``."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def _bcast(v: jax.Array) -> jax.Array:
    return v[:, None, None, None, None]


def loss_fn(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    """The training loss of ``model`` (a :class:`~jflow.models.FlowUNet`) on a batch.

    ``batch`` holds ``flow [B,T,h,w,4]`` (normalised), ``text_tokens [B,L,D]``,
    ``text_mask [B,L]``, ``rgb [B,H,W,3]``, ``depth [B,H,W]``; ``rng`` is a JAX key. The
    objective is ``model.config.objective``; the loss is the channel-weighted mean of the
    squared errors (``ObjectiveConfig.visibility_weight``), normalised by the mean weight, or
    with ``point_loss="pseudo_huber"`` one pseudo-Huber term per point for its (u, v, depth)
    error next to the weighted squared visibility error.
    Returns ``(loss, metrics)`` with metrics
    ``loss``, ``mse_uv``, ``mse_depth``, ``mse_visible`` and ``text_kept`` (fraction).
    """
    obj: ObjectiveConfig = model.config.objective
    cond = conditioning_from_tensors(batch)
    x0 = to_target_space(jnp.asarray(batch["flow"], jnp.float32), obj)
    b = x0.shape[0]
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    keep = jax.random.uniform(k_drop, (b,)) >= obj.text_drop_prob
    cond = cond.drop_text(keep)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    n = obj.num_train_steps
    if obj.kind == "flow_matching":
        t = shifted_time(jax.random.uniform(k_t, (b,)), obj.time_shift)
        xt = (1 - _bcast(t)) * x0 + _bcast(t) * eps
        target = x0 if obj.flow_prediction == "sample" else eps - x0
        pred = network_prediction(model(network_input(xt, t, obj), t * n, cond), xt, t, obj)
    else:
        table = jnp.asarray(alphas_cumprod(obj), jnp.float32)
        t_int = jax.random.randint(k_t, (b,), 0, n)
        abar = _bcast(table[t_int])
        xt = jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * eps
        target = eps if obj.kind == "ddpm_eps" else jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * x0
        pred = model(xt, t_int.astype(jnp.float32), cond)
    err = (pred - target) ** 2
    loss = prediction_loss(pred, target, obj)
    metrics = {
        "loss": loss,
        "mse_uv": err[..., :2].mean(),
        "mse_depth": err[..., 2].mean(),
        "mse_visible": err[..., 3].mean(),
        "text_kept": keep.mean(),
    }
    return loss, metrics
