"""FlowModelConfig / ObjectiveConfig: presets, validation, serialisation, abstract shapes."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jflow.errors import ConfigError, UnknownNameError
from jflow.models import Conditioning, FlowModelConfig, FlowUNet, ObjectiveConfig, config_diff


def _abstract_forward(cfg: FlowModelConfig, batch: int = 2):
    """Output shape of the model's forward pass without allocating or compiling anything."""
    model = nnx.eval_shape(lambda: FlowUNet(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((batch, cfg.num_frames, *cfg.grid_hw, 4), jnp.float32)
    cond = Conditioning(
        text_tokens=jax.ShapeDtypeStruct((batch, 7, cfg.text_dim), jnp.float32),
        text_mask=jax.ShapeDtypeStruct((batch, 7), bool),
        rgb=jax.ShapeDtypeStruct((batch, 48, 40, 3), jnp.uint8),
        depth=jax.ShapeDtypeStruct((batch, 48, 40), jnp.float32),
        initial_points=jax.ShapeDtypeStruct((batch, *cfg.grid_hw, 4), jnp.float32),
    )
    t = jax.ShapeDtypeStruct((batch,), jnp.float32)
    return jax.eval_shape(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c), state, x, t, cond)


@pytest.mark.parametrize(
    "cfg",
    [
        FlowModelConfig.tiny(),
        FlowModelConfig.tiny(patch_size=1),
        FlowModelConfig.tiny(motion_levels=(False, True), dropout=0.1),
        FlowModelConfig.tiny(
            channels=(16, 16, 32),
            attention_levels=(False, False, True),
            grid_hw=(8, 16),
            patch_size=1,
        ),
        FlowModelConfig.tiny(frame_patch=2),
        FlowModelConfig.default(),
    ],
    ids=["tiny", "tiny-patch1", "tiny-motion-dropout", "three-levels", "frame-pairs", "default"],
)
def test_forward_shapes_for_every_config_path(cfg):
    out = _abstract_forward(cfg)
    assert out.shape == (2, cfg.num_frames, *cfg.grid_hw, 4)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("kind", ["ddpm_eps", "ddpm_v", "flow_matching"])
def test_objective_kinds_and_defaults(kind):
    obj = ObjectiveConfig(kind=kind)
    assert obj.sampler == ("euler" if kind == "flow_matching" else "ddim")
    assert obj.steps == (10 if kind == "flow_matching" else 50)


def test_presets_are_valid_and_large_is_large():
    tiny, default, large = (
        FlowModelConfig.tiny(),
        FlowModelConfig.default(),
        FlowModelConfig.large(),
    )
    assert default.num_frames == 16 and default.grid_hw == (16, 16)
    assert large.channels == (320, 640, 1280, 1280) and large.num_res_blocks == 2
    assert tiny.channels < default.channels


def test_round_trip_through_json():
    cfg = FlowModelConfig.default(objective=ObjectiveConfig(kind="ddpm_v", schedule="linear"))
    data = json.loads(json.dumps(cfg.to_dict()))
    back = FlowModelConfig.from_dict(data)
    assert back == cfg
    assert hash(back) == hash(cfg)  # frozen and hashable: usable as a static jit argument


def test_config_diff_lists_mismatches():
    a = FlowModelConfig.default()
    b = dataclasses.replace(a, channels=(32, 64, 64), attention_levels=(False, True, True))
    assert config_diff(a.to_dict(), a) == []
    diff = config_diff(a.to_dict(), b)
    assert any(line.startswith("channels:") for line in diff)
    assert any(line.startswith("attention_levels:") for line in diff)
    c = dataclasses.replace(a, objective=ObjectiveConfig(kind="ddpm_eps"))
    assert any(line.startswith("objective.kind") for line in config_diff(a, c))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": (32, 64), "attention_levels": (True,)},
        {"grid_hw": (10, 10)},
        {"groups": 5},
        {"num_frames": 64},
        {"patch_size": 0},
        {"frame_patch": 0},
        {"frame_patch": 3},  # does not divide 16 frames
        {"motion_levels": (True,)},
    ],
)
def test_bad_configs_raise(kwargs):
    with pytest.raises(ConfigError):
        FlowModelConfig.default(**kwargs)


def test_bad_objective_names_list_known():
    with pytest.raises(UnknownNameError, match="ddpm_eps"):
        ObjectiveConfig(kind="score")
    with pytest.raises(UnknownNameError):
        ObjectiveConfig(schedule="sigmoid")
    with pytest.raises(ConfigError):
        FlowModelConfig.from_dict({"channelz": [1]})
