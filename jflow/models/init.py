"""Host-side (numpy) parameter initialisers.

Initialising with ``jax.random`` compiles one small XLA program per distinct parameter shape,
which on a small CPU machine costs tens of seconds for a UNet. These initialisers draw from
numpy, seeded from the (concrete) JAX key, and fall back to ``jax.random`` when the key is
traced (inside ``jax.jit`` / ``nnx.eval_shape``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _seed(key) -> int | None:
    if isinstance(key, jax.core.Tracer):
        return None
    data = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
    return int(np.bitwise_xor.reduce(data * np.uint64(2654435761)) % (2**63))


def variance_scaling(scale: float = 1.0, fan: str = "in"):
    """Truncated-normal-free ``N(0, scale / fan)`` initialiser (fan over all but the last axis)."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
        fan_out = shape[-1]
        n = fan_in if fan == "in" else (fan_in + fan_out) / 2
        std = math.sqrt(scale / max(n, 1))
        seed = _seed(key)
        if seed is None:
            return (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)
        values = np.random.default_rng(seed).standard_normal(shape) * std
        return jnp.asarray(values, dtype)

    return init


def normal(std: float):
    def init(key, shape, dtype=jnp.float32):
        seed = _seed(key)
        if seed is None:
            return (jax.random.normal(key, tuple(shape), jnp.float32) * std).astype(dtype)
        return jnp.asarray(np.random.default_rng(seed).standard_normal(tuple(shape)) * std, dtype)

    return init


def zeros(key, shape, dtype=jnp.float32):
    return jnp.asarray(np.zeros(tuple(shape)), dtype)


def ones(key, shape, dtype=jnp.float32):
    return jnp.asarray(np.ones(tuple(shape)), dtype)


lecun_normal = variance_scaling(1.0, "in")


def Linear(*args, **kwargs):  # noqa: N802 - a constructor
    """``nnx.Linear`` with host-side initialisers."""
    from flax import nnx

    kwargs.setdefault("kernel_init", lecun_normal)
    kwargs.setdefault("bias_init", zeros)
    return nnx.Linear(*args, **kwargs)


def Conv(*args, **kwargs):  # noqa: N802
    """``nnx.Conv`` with host-side initialisers."""
    from flax import nnx

    kwargs.setdefault("kernel_init", lecun_normal)
    kwargs.setdefault("bias_init", zeros)
    return nnx.Conv(*args, **kwargs)


def GroupNorm(*args, **kwargs):  # noqa: N802
    from flax import nnx

    kwargs.setdefault("scale_init", ones)
    kwargs.setdefault("bias_init", zeros)
    return nnx.GroupNorm(*args, **kwargs)


def LayerNorm(*args, **kwargs):  # noqa: N802
    from flax import nnx

    kwargs.setdefault("scale_init", ones)
    kwargs.setdefault("bias_init", zeros)
    return nnx.LayerNorm(*args, **kwargs)
