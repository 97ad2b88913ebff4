"""The official-checkpoint loader: every tensor of TAPIR, BootsTAPIR and causal TAPIR lands
in its place, the variant is inferred, and bad files fail naming every bad tensor.

The layouts come from ../shared/reference/tapir_checkpoint_layout.json (beside the dev
checkout); checkpoints are random-valued files written in that layout.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jflow.errors import DataError, ShapeError
from jflow.tracking.tapir import (
    TAPIR,
    VARIANTS,
    TapirConfig,
    TapirTracker,
    expected_layout,
    infer_variant,
    init_tapir,
    load_tapir_checkpoint,
    model_to_haiku_params,
    save_tapir_checkpoint,
)
from jflow.tracking.tapir.checkpoint import check_layout, params_to_model, read_haiku_params

LAYOUT_FILE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / "tapir_checkpoint_layout.json"
)
JSON_KEYS = {"tapir": "tapir", "bootstapir": "bootstapir", "causal_tapir": "causal_tapir_cfg"}
PUBLISHED_SIZES = {"tapir": 31_072_327, "bootstapir": 54_699_335}


@pytest.fixture(scope="module")
def layouts() -> dict:
    if not LAYOUT_FILE.is_file():
        pytest.skip(
            f"official layout reference not found at {LAYOUT_FILE} (only beside the dev checkout)"
        )
    raw = json.loads(LAYOUT_FILE.read_text())
    return {
        v: {m: {t: tuple(s) for t, s in d.items()} for m, d in raw[k].items()}
        for v, k in JSON_KEYS.items()
    }


def zeros_like_layout(layout: dict) -> dict:
    """Shape-only stand-ins (no memory) for the checks that never read values."""
    return {
        m: {t: np.broadcast_to(np.float32(0), s) for t, s in d.items()} for m, d in layout.items()
    }


def write_random_checkpoint(path: Path, layout: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    params = {
        m: {t: rng.normal(0, 0.05, s).astype(np.float32) for t, s in sorted(d.items())}
        for m, d in sorted(layout.items())
    }
    np.save(path, {"params": params, "state": {}}, allow_pickle=True)
    return params


def test_model_layout_is_exactly_the_official_layout(layouts):
    for variant, layout in layouts.items():
        assert expected_layout(VARIANTS[variant]) == layout, variant
    for variant, size in PUBLISHED_SIZES.items():
        assert sum(int(np.prod(s)) for d in layouts[variant].values() for s in d.values()) == size


def test_variant_is_inferred_from_the_tensors(layouts):
    for variant, layout in layouts.items():
        assert infer_variant(zeros_like_layout(layout)) == variant
    broken = zeros_like_layout(layouts["tapir"])
    broken["tapir/~/pips_mlp_mixer/linear"]["w"] = np.zeros((500, 512), np.float32)
    with pytest.raises(DataError, match="500 input rows"):
        infer_variant(broken)
    del broken["tapir/~/pips_mlp_mixer/linear"]
    with pytest.raises(DataError, match="variant="):
        infer_variant(broken)


def _check_loaded(model: TAPIR, params: dict) -> None:
    """Every tensor of the file is in the model, unchanged, and nothing else is."""
    n_model = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    n_file = sum(a.size for d in params.values() for a in d.values())
    assert n_model == n_file
    back = model_to_haiku_params(model)
    assert back.keys() == params.keys()
    for module, tensors in params.items():
        assert back[module].keys() == tensors.keys(), module
        for name, arr in tensors.items():
            np.testing.assert_array_equal(back[module][name], arr, err_msg=f"{module}/{name}")


@pytest.mark.parametrize("variant", ["tapir", "causal_tapir"])
def test_load_tapir_and_causal_tapir(layouts, tmp_path, variant):
    path = tmp_path / f"{variant}.npy"
    params = write_random_checkpoint(path, layouts[variant], seed=1)
    name, model = load_tapir_checkpoint(path)
    path.unlink()  # 120 MB; pytest keeps old temporary directories
    assert name == variant
    assert model.config == VARIANTS[variant]
    assert model.config.use_causal_conv == (variant == "causal_tapir")
    _check_loaded(model, params)
    # A few tensors by hand: Haiku and Flax both keep conv kernels HWIO, linear [in, out]
    # and depthwise temporal kernels [k, 1, channels]; nothing is transposed.
    resnet = model.features.resnet
    np.testing.assert_array_equal(
        resnet.initial_conv.kernel[...], params["tapir/~/resnet/~/initial_conv"]["w"]
    )
    assert resnet.initial_conv.kernel.shape == (7, 7, 3, 64)
    g2 = "tapir/~/resnet/~/block_group_2/~/block_0/~/"
    np.testing.assert_array_equal(
        resnet.block_groups[2][0].conv_0.kernel[...], params[g2 + "conv_0"]["w"]
    )
    np.testing.assert_array_equal(
        resnet.block_groups[2][0].shortcut_conv.kernel[...], params[g2 + "shortcut_conv"]["w"]
    )
    np.testing.assert_array_equal(
        resnet.block_groups[2][0].instancenorm_0.offset[...],
        params[g2 + "instancenorm_0"]["offset"],
    )
    mixer = model.pips_mlp_mixer
    b7 = "tapir/~/pips_mlp_mixer/block_7/"
    np.testing.assert_array_equal(
        mixer.blocks[7].mlp1_up_1.kernel[...], params[b7 + "mlp1_up_1"]["w"]
    )
    np.testing.assert_array_equal(
        mixer.blocks[7].mlp2_down.bias[...], params[b7 + "mlp2_down"]["b"]
    )
    np.testing.assert_array_equal(
        mixer.blocks[0].layer_norm_1.scale[...],
        params["tapir/~/pips_mlp_mixer/block/layer_norm_1"]["scale"],
    )
    np.testing.assert_array_equal(
        mixer.linear_1.kernel[...], params["tapir/~/pips_mlp_mixer/linear_1"]["w"]
    )
    np.testing.assert_array_equal(
        model.cost_volume_occlusion_2.kernel[...], params["tapir/~/cost_volume_occlusion_2"]["w"]
    )

    # The kernels act as Haiku's layers do: a SAME stride-2 cross-correlation ...
    x = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
    want = jax.lax.conv_general_dilated(
        x,
        jnp.asarray(params["tapir/~/resnet/~/initial_conv"]["w"]),
        (2, 2),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(np.asarray(resnet.initial_conv(x)), np.asarray(want), atol=1e-5)
    # ... and the temporal depthwise conv with channel multiplier 4 (output 4c + m reads
    # input channel c), checked against an explicit loop in numpy.
    seq = np.random.default_rng(2).normal(size=(1, 5, 512)).astype(np.float32)
    w = params["tapir/~/pips_mlp_mixer/block/mlp1_up"]["w"]
    b = params["tapir/~/pips_mlp_mixer/block/mlp1_up"]["b"]
    pad = np.pad(seq[0], ((2, 0), (0, 0)) if variant == "causal_tapir" else ((1, 1), (0, 0)))
    src = np.repeat(np.arange(512), 4)
    loop = np.stack([sum(pad[t + k, src] * w[k, 0] for k in range(3)) + b for t in range(5)])
    conv = mixer.blocks[0].mlp1_up
    if variant == "causal_tapir":
        got = conv(jnp.concatenate([jnp.zeros((1, 2, 512)), jnp.asarray(seq)], axis=1))
    else:
        got = conv(jnp.asarray(seq))
    np.testing.assert_allclose(np.asarray(got)[0], loop, atol=1e-4)


@pytest.fixture(scope="module")
def bootstapir(layouts, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "bootstapir_checkpoint_v2.npy"
    params = write_random_checkpoint(path, layouts["bootstapir"], seed=3)
    name, model = load_tapir_checkpoint(path, num_pips_iter=1)
    path.unlink()  # 220 MB
    return name, model, params


def test_load_bootstapir(bootstapir):
    name, model, params = bootstapir
    assert name == "bootstapir"
    assert model.config.extra_convs and model.config.pyramid_level == 1
    assert model.config.softmax_temperature == 10.0
    _check_loaded(model, params)
    extra = model.features.extra_convs
    np.testing.assert_array_equal(
        extra.up[1].kernel[...], params["tapir/~/extra_convs/conv2_d_2"]["w"]
    )
    np.testing.assert_array_equal(
        extra.down[1].kernel[...], params["tapir/~/extra_convs/conv2_d_3"]["w"]
    )
    np.testing.assert_array_equal(
        extra.down[4].bias[...], params["tapir/~/extra_convs/conv2_d_9"]["b"]
    )
    np.testing.assert_array_equal(
        extra.layer_norms[2].offset[...], params["tapir/~/extra_convs/layer_norm_2"]["offset"]
    )


# Outputs of the reference model (a transcription of tapnet's Haiku TAPIR, run outside this
# repository with haiku) for the `bootstapir` fixture's weights with num_pips_iter=1, on
# the video and queries of the test below at 64x64; rounded to 4 decimals.
REFERENCE_TRACKS = [
    [[19.9672, 9.9991], [46.4348, 22.0319], [46.4404, 22.0302]],
    [[46.4739, 21.8811], [46.4782, 21.8874], [59.9113, 30.5165]],
    [[23.1130, 41.9650], [0.4497, 63.4984], [23.1155, 41.9650]],
]
REFERENCE_OCCLUSION = [
    [-0.0164, -0.0472, -0.0463],
    [-0.0405, -0.0417, -0.0519],
    [-0.0286, 0.0198, -0.0289],
]
REFERENCE_EXPECTED_DIST = [
    [0.0362, 0.0213, 0.0224],
    [0.0354, 0.0376, 0.0174],
    [0.0235, 0.0388, 0.0237],
]


def test_loaded_model_matches_reference_numbers(bootstapir):
    _, model, _ = bootstapir
    tracker = TapirTracker(model, resolution=(64, 64))  # the video is 64x64: no resizing
    video = (np.random.default_rng(4).random((3, 64, 64, 3)) * 255).astype(np.uint8)
    queries = np.array([[0, 10.0, 20.0], [2, 30.5, 60.0], [1, 63.5, 0.5]], np.float32)
    res = tracker.track(video, queries)
    assert res.tracks.shape == (3, 3, 2) and res.visible.shape == (3, 3)
    assert res.occlusion.shape == res.uncertainty.shape == (3, 3)
    assert np.all(np.isfinite(res.tracks))
    np.testing.assert_array_equal(res.visible, (1 - res.occlusion) * (1 - res.uncertainty) > 0.5)
    np.testing.assert_allclose(res.tracks, REFERENCE_TRACKS, atol=2e-3)
    sigmoid = lambda x: 1 / (1 + np.exp(-np.asarray(x)))  # noqa: E731
    np.testing.assert_allclose(res.occlusion, sigmoid(REFERENCE_OCCLUSION), atol=1e-4)
    np.testing.assert_allclose(res.uncertainty, sigmoid(REFERENCE_EXPECTED_DIST), atol=1e-4)


def test_missing_unexpected_and_misshaped_tensors_are_all_named(layouts):
    params = zeros_like_layout(layouts["tapir"])
    del params["tapir/~/pips_mlp_mixer/block_3/mlp2_up"]["b"]
    del params["tapir/~/occlusion_out"]
    params["tapir/~/resnet/~/block_group_1/~/block_1/~/conv_0"]["w"] = np.zeros(
        (3, 3, 128, 64), np.float32
    )
    params["tapir/~/regression_hid"] = {"w": np.zeros((16, 128), np.float32)}
    params["tapir/~/cost_volume_regression_1"]["extra"] = np.zeros(3, np.float32)
    with pytest.raises(DataError) as err:
        params_to_model(params, VARIANTS["tapir"])
    msg = str(err.value)
    for name in (
        "tapir/~/pips_mlp_mixer/block_3/mlp2_up/b",
        "tapir/~/occlusion_out/w",
        "tapir/~/occlusion_out/b",
        "tapir/~/regression_hid/w",
        "tapir/~/cost_volume_regression_1/extra",
        "tapir/~/resnet/~/block_group_1/~/block_1/~/conv_0/w: expected [3, 3, 128, 128], got [3, 3, 128, 64]",
    ):
        assert name in msg
    assert "3 missing" in msg and "2 unexpected" in msg and "1 mis-shaped" in msg


def test_shape_only_mismatch_is_a_shape_error(layouts):
    params = zeros_like_layout(layouts["causal_tapir"])
    with pytest.raises(
        ShapeError, match=r"pips_mlp_mixer/linear/w: expected \[486, 512\], got \[535, 512\]"
    ):
        check_layout(params, expected_layout(VARIANTS["tapir"]), "the tapir layout")
    # A BootsTAPIR file forced to load as TAPIR: extra convs are unexpected.
    with pytest.raises(DataError, match="extra_convs/conv2_d_9/w"):
        check_layout(
            zeros_like_layout(layouts["bootstapir"]), expected_layout(VARIANTS["tapir"]), "tapir"
        )


def test_unreadable_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tapir_checkpoint(tmp_path / "nope.npy")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(DataError, match="not a pickled dict"):
        read_haiku_params(tmp_path / "array.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read"):
        read_haiku_params(tmp_path / "junk.npy")


def test_save_and_reload_round_trip(tmp_path):
    cfg = TapirConfig(
        channels_per_group=(8, 16, 32, 32),
        blocks_per_group=(1, 1, 1, 1),
        initial_conv_channels=8,
        mixer_hidden_dim=16,
        num_mixer_blocks=2,
        pyramid_level=1,
        extra_convs=True,
        extra_conv_layers=2,
    )
    model = init_tapir(cfg, seed=5)
    path = save_tapir_checkpoint(model, tmp_path / "tiny.npy")
    params = read_haiku_params(path)
    assert (
        "tapir/~/extra_convs/conv2_d_3" in params
        and "tapir/~/pips_mlp_mixer/block_1/mlp1_up_1" in params
    )
    again = params_to_model(params, cfg)
    _check_loaded(again, model_to_haiku_params(model))
