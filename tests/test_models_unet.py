"""The flow UNet end to end (tiny config): input validation, conditioning reaching the
network, sampling, and overfitting one example."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jflow.errors import DataError, ShapeError
from jflow.models import (
    FAST_COMPILE,
    FlowModelConfig,
    FlowUNet,
    conditioning_from_tensors,
    loss_fn,
    sample,
)
from jflow.models.samplers import _sample_jit
from jflow.models.unet import channels_to_frames, frames_to_channels

fast_jit = partial(jax.jit, compiler_options=FAST_COMPILE)
CFG = FlowModelConfig.tiny()
B, L = 2, 6


def make_batch(seed=0, b=B):
    rng = np.random.default_rng(seed)
    return {
        "flow": jnp.asarray(rng.standard_normal((b, CFG.num_frames, *CFG.grid_hw, 4)), jnp.float32),
        "text_tokens": jnp.asarray(rng.standard_normal((b, L, CFG.text_dim)), jnp.float32),
        "text_mask": jnp.asarray(np.arange(L)[None].repeat(b, 0) < 4),
        "rgb": jnp.asarray(rng.integers(0, 255, (b, 24, 32, 3)), jnp.uint8),
        "depth": jnp.asarray(rng.uniform(0.5, 2.0, (b, 24, 32)), jnp.float32),
    }


@pytest.fixture(scope="module")
def model():
    return FlowUNet(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def forward(model):
    graphdef, _ = nnx.split(model)
    jitted = fast_jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c))
    return lambda m, x, t, c: jitted(nnx.state(m), x, t, c)


def test_forward_shape_and_finite(model, forward):
    batch = make_batch()
    cond = conditioning_from_tensors(batch)
    out = forward(model, batch["flow"], jnp.array([3.0, 70.0]), cond)
    assert out.shape == batch["flow"].shape
    assert np.all(np.isfinite(np.asarray(out)))


def test_conditioning_reaches_the_network(model, forward):
    batch = make_batch()
    cond = conditioning_from_tensors(batch)
    t = jnp.array([10.0, 10.0])
    base = np.asarray(forward(model, batch["flow"], t, cond))
    changes = {
        "text": cond.replace(text_tokens=cond.text_tokens + 1.0),
        "text dropped": cond.without_text(),
        "rgb": cond.replace(rgb=255 - cond.rgb),
        "depth": cond.replace(depth=cond.depth * 2),
        "initial points": cond.replace(initial_points=cond.initial_points + 0.5),
    }
    for name, c in changes.items():
        diff = np.abs(np.asarray(forward(model, batch["flow"], t, c)) - base).max()
        assert diff > 1e-4, f"changing the {name} does not change the prediction"
    # masked (padding) text tokens must not matter
    padded = cond.replace(text_tokens=cond.text_tokens.at[:, 4:].set(50.0))
    np.testing.assert_allclose(
        np.asarray(forward(model, batch["flow"], t, padded)), base, atol=1e-5
    )


def test_input_errors(model):
    batch = make_batch()
    cond = conditioning_from_tensors(batch)
    t = jnp.zeros(B)
    with pytest.raises(ShapeError, match="grid"):
        model(jnp.zeros((B, CFG.num_frames, 4, 4, 4)), t, cond)
    with pytest.raises(ShapeError, match="frames"):
        model(jnp.zeros((B, CFG.num_frames + 1, *CFG.grid_hw, 4)), t, cond)
    with pytest.raises(ShapeError, match="text_dim"):
        model(batch["flow"], t, cond.replace(text_tokens=jnp.zeros((B, L, 7))))
    with pytest.raises(ShapeError, match="initial_points"):
        model(batch["flow"], t, cond.replace(initial_points=jnp.zeros((B, 4, 4, 4))))
    with pytest.raises(DataError, match="non-finite"):
        model(batch["flow"].at[0, 1, 2, 3, 0].set(jnp.nan), t, cond)
    with pytest.raises(DataError):
        sample(model, cond.replace(initial_points=cond.initial_points.at[0, 0, 0, 0].set(jnp.inf)))


def test_sample_shapes_clamp_and_cfg_scale_one(model):
    batch = make_batch()
    cond = conditioning_from_tensors(batch)
    plain = sample(
        model, cond, rng=jax.random.key(1), num_samples=2, steps=3, compiler_options=FAST_COMPILE
    )
    assert plain.shape == (B, 2, CFG.num_frames, *CFG.grid_hw, 4)
    init = np.asarray(batch["flow"][:, 0])
    np.testing.assert_array_equal(np.asarray(plain[:, :, 0]), np.repeat(init[:, None], 2, 1))
    assert np.abs(np.asarray(plain[:, 0] - plain[:, 1])).max() > 1e-3, "samples should differ"
    # the guided program (conditional and unconditional together) at scale 1 = conditional only
    graphdef, state = nnx.split(model)
    kw = dict(num_samples=2, steps=3, sampler="euler", clamp=True)
    run = _sample_jit(FAST_COMPILE)
    guided = run(
        graphdef,
        state,
        cond,
        jax.random.key(1),
        jnp.float32(1.0),
        jnp.float32(0.0),
        jnp.float32(1.0),
        guided=True,
        **kw,
    )
    np.testing.assert_allclose(np.asarray(guided), np.asarray(plain), atol=1e-5)
    strong = run(
        graphdef,
        state,
        cond,
        jax.random.key(1),
        jnp.float32(4.0),
        jnp.float32(0.0),
        jnp.float32(1.0),
        guided=True,
        **kw,
    )
    assert np.abs(np.asarray(strong - plain)).max() > 1e-4


def test_overfits_one_example():
    """Overfitting steps on ONE fixed example (flow, conditioning, noise and t held fixed)
    bring the flow-matching loss down by a large factor (measured: 1.94 -> 0.12 after 50
    steps, 0.0007 after 100)."""
    model = FlowUNet(CFG, rngs=nnx.Rngs(1))
    batch = make_batch(seed=7, b=1)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    key = jax.random.key(11)

    @fast_jit
    def step(state):
        m, opt = nnx.merge(graphdef, state)
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(m, batch, key)
        opt.update(m, grads)
        return nnx.state((m, opt)), loss

    losses = []
    for _ in range(70):
        state, loss = step(state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_grid_embedding_tells_the_cells_of_a_uniform_grid_apart():
    # Every cell holds the same initial point: without the embedding the point features are the
    # same in every cell; with it they differ by exactly the learned per-cell embedding.
    batch = make_batch()
    batch["flow"] = jnp.zeros_like(batch["flow"]).at[..., :3].set(0.3).at[..., 3].set(1.0)
    cond = conditioning_from_tensors(batch)
    features = {}
    for on in (False, True):
        cfg = dataclasses.replace(CFG, grid_embedding=on)
        encoder = FlowUNet(cfg, rngs=nnx.Rngs(0)).cond_encoder
        features[on] = np.asarray(encoder(cond).point_features)
        if on:
            embedding = np.asarray(encoder.grid_embed[...])
    cells = (CFG.grid_hw[0] // CFG.patch_size, CFG.grid_hw[1] // CFG.patch_size)
    assert features[True].shape == (B, *cells, CFG.channels[0]) == (B, *embedding.shape)
    assert np.ptp(features[False], axis=(1, 2)).max() < 1e-6
    assert np.ptp(features[True], axis=(1, 2)).min() > 1e-3
    np.testing.assert_allclose(features[True] - embedding[None], features[False], atol=1e-6)
    legacy = dataclasses.replace(CFG, grid_embedding=True).to_dict()
    del legacy["grid_embedding"]  # a run saved before the field existed
    assert FlowModelConfig.from_dict(legacy).grid_embedding is False


def test_frame_patch_groups_consecutive_frames_and_puts_them_back():
    x = jnp.arange(2 * 4 * 3 * 2 * 4, dtype=jnp.float32).reshape(2, 4, 3, 2, 4)
    grouped = frames_to_channels(x, 2)
    assert grouped.shape == (2, 2, 3, 2, 8)
    # Group 1 holds frames 2 and 3, frame-major along the channels.
    np.testing.assert_array_equal(grouped[:, 1, ..., :4], x[:, 2])
    np.testing.assert_array_equal(grouped[:, 1, ..., 4:], x[:, 3])
    np.testing.assert_array_equal(channels_to_frames(grouped, 2), x)

    cfg = dataclasses.replace(CFG, frame_patch=2)
    paired = FlowUNet(cfg, rngs=nnx.Rngs(0))
    assert (
        paired.conv_in.kernel.shape[-2]
        == 2 * FlowUNet(CFG, rngs=nnx.Rngs(0)).conv_in.kernel.shape[-2]
    )
    batch = make_batch()
    cond = conditioning_from_tensors(batch)
    enc = paired.encode(cond)
    t = jnp.array([3.0, 70.0])
    out = paired.denoise(batch["flow"], t, enc)
    assert out.shape == batch["flow"].shape and np.all(np.isfinite(np.asarray(out)))
    # Frames interact only through the motion modules: changing the input's frame 3 (the second
    # group) changes the output; with the motion modules' output projections at zero (their
    # initialisation) frames 0 and 1 (the first group) do not see it, and frames 2 and 3 both do.
    changed = paired.denoise(batch["flow"].at[:, 3].add(1.0), t, enc)
    diff = np.abs(np.asarray(changed - out)).max(axis=(0, 2, 3, 4))
    assert diff[0] == diff[1] == 0.0 and diff[2] > 1e-4 and diff[3] > 1e-4
    legacy = cfg.to_dict()
    del legacy["frame_patch"]  # a run saved before the field existed
    assert FlowModelConfig.from_dict(legacy).frame_patch == 1
