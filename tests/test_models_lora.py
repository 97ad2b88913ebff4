"""LoRA on the attention projections: identity at init, merge / unmerge, gradient filter."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jflow.errors import ConfigError
from jflow.models import (
    FAST_COMPILE,
    LORA_FILTER,
    FlowModelConfig,
    FlowUNet,
    LoRALinear,
    apply_lora,
    conditioning_from_tensors,
    finetune_filter,
    lora_param_count,
    merge_lora,
    unmerge_lora,
)
from jflow.models.attention import SpatialTransformer

fast_jit = partial(jax.jit, compiler_options=FAST_COMPILE)
CFG = FlowModelConfig.tiny()


def _batch(b=2):
    rng = np.random.default_rng(0)
    return {
        "flow": jnp.asarray(rng.standard_normal((b, CFG.num_frames, *CFG.grid_hw, 4)), jnp.float32),
        "text_tokens": jnp.asarray(rng.standard_normal((b, 5, CFG.text_dim)), jnp.float32),
        "text_mask": jnp.ones((b, 5), bool),
        "rgb": jnp.zeros((b, 16, 16, 3), jnp.uint8),
        "depth": jnp.ones((b, 16, 16), jnp.float32),
    }


@partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _forward_jit(graphdef, state, batch):
    cond = conditioning_from_tensors(batch)
    return nnx.merge(graphdef, state)(batch["flow"], jnp.full((2,), 5.0), cond)


def _forward(model, batch):
    return np.asarray(_forward_jit(*nnx.split(model), batch))


def _perturb_lora(model, seed=0):
    for i, (_, layer) in enumerate(
        (p, n) for p, n in nnx.iter_graph(model) if isinstance(n, LoRALinear)
    ):
        key = jax.random.key(seed + i)
        layer.lora_b[...] = 0.2 * jax.random.normal(key, layer.lora_b.shape)


def _base_kernels(model):
    return {
        p: np.asarray(n.base.kernel[...])
        for p, n in nnx.iter_graph(model)
        if isinstance(n, LoRALinear)
    }


def test_lora_on_unet_identity_merge_unmerge():
    model = FlowUNet(CFG, rngs=nnx.Rngs(0))
    batch = _batch()
    before = _forward(model, batch)
    n = apply_lora(model, rank=2, alpha=4.0, rngs=nnx.Rngs(1))
    assert n > 0 and lora_param_count(model) > 0
    # motion modules are left alone by default
    paths = [p for p, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)]
    assert not any("motion" in map(str, p) for p in paths)
    np.testing.assert_array_equal(_forward(model, batch), before)  # B = 0 at init

    _perturb_lora(model)
    base = _base_kernels(model)
    unmerged_out = _forward(model, batch)
    assert np.abs(unmerged_out - before).max() > 1e-4
    merge_lora(model)
    assert any(
        np.abs(np.asarray(k[...]) - base[p]).max() > 1e-4
        for p, k in (
            (p, n.base.kernel) for p, n in nnx.iter_graph(model) if isinstance(n, LoRALinear)
        )
    )
    np.testing.assert_allclose(_forward(model, batch), unmerged_out, atol=1e-5)
    unmerge_lora(model)
    for p, k in _base_kernels(model).items():
        np.testing.assert_allclose(k, base[p], atol=1e-6)
    np.testing.assert_allclose(_forward(model, batch), unmerged_out, atol=1e-5)


def test_only_lora_params_train_under_the_filter():
    st = SpatialTransformer(8, 6, num_heads=2, groups=4, rngs=nnx.Rngs(0))
    apply_lora(st, rank=2, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 8))
    ctx = jax.random.normal(jax.random.key(1), (3, 5, 6))
    mask = jnp.ones((3, 5), bool)
    opt = nnx.Optimizer(st, optax.sgd(0.1), wrt=LORA_FILTER)
    frozen_before = [np.array(a) for a in jax.tree.leaves(nnx.state(st, nnx.Not(LORA_FILTER)))]
    lora_before = [np.array(a) for a in jax.tree.leaves(nnx.state(st, LORA_FILTER))]

    def loss(m):
        return jnp.mean((m(x, ctx, mask) - 1.0) ** 2)

    graphdef, state = nnx.split(st)

    @fast_jit
    def lora_grads(state):
        return nnx.grad(loss, argnums=nnx.DiffState(0, LORA_FILTER))(nnx.merge(graphdef, state))

    grads = lora_grads(state)
    leaves = jax.tree.leaves(grads)
    assert leaves and len(leaves) == len(lora_before)
    opt.update(st, grads)
    for a, b in zip(
        frozen_before, jax.tree.leaves(nnx.state(st, nnx.Not(LORA_FILTER))), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    changed = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(lora_before, jax.tree.leaves(nnx.state(st, LORA_FILTER)), strict=True)
    ]
    assert max(changed) > 0  # B receives a gradient through A at init


def test_finetune_filter_with_motion_and_errors():
    model = nnx.eval_shape(lambda: FlowUNet(CFG, rngs=nnx.Rngs(0)))
    apply_lora(model, rank=2)
    lora = jax.tree.leaves(nnx.state(model, finetune_filter()))
    both = jax.tree.leaves(nnx.state(model, finetune_filter(motion=True)))
    assert len(both) > len(lora) > 0
    with pytest.raises(ConfigError):
        apply_lora(model, rank=0)
    with pytest.raises(ConfigError):
        apply_lora(model, rank=2, targets=("to_x",))
