"""TAPIR's forward pass, tracker interface, coordinate conventions and online (causal) mode,
on tiny randomly initialised models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jflow.errors import ConfigError, ShapeError
from jflow.tracking.interface import PointTracker
from jflow.tracking.tapir import (
    TapirConfig,
    TapirTracker,
    init_tapir,
    preprocess_frames,
    visibility,
)
from jflow.tracking.tapir.model import summarize

TINY = dict(
    channels_per_group=(8, 16, 32, 32),
    blocks_per_group=(1, 1, 1, 1),
    initial_conv_channels=8,
    mixer_hidden_dim=32,
    num_mixer_blocks=2,
    num_pips_iter=2,
    pyramid_level=1,
)
RES = (64, 64)


def random_video(t=5, h=48, w=80, seed=0):
    return (np.random.default_rng(seed).random((t, h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def boots_like():
    """BootsTAPIR's structure (pyramid level 1, extra convs), tiny widths."""
    return init_tapir(
        TapirConfig(extra_convs=True, extra_conv_layers=2, softmax_temperature=10.0, **TINY), seed=1
    )


@pytest.fixture(scope="module")
def causal():
    return init_tapir(TapirConfig(use_causal_conv=True, **TINY), seed=2)


@pytest.fixture(scope="module")
def tracker(boots_like):
    return TapirTracker(boots_like, resolution=RES, query_chunk_size=3, frame_chunk_size=2)


def test_tracker_interface_and_outputs(tracker):
    assert isinstance(tracker, PointTracker)
    video = random_video()
    queries = np.array(
        [[0, 10, 20], [4, 47.5, 79.5], [2, 0, 0], [1, 24, 40], [3, 5.5, 60]], np.float32
    )
    res = tracker.track(video, queries)
    assert res.tracks.shape == (5, 5, 2) and res.tracks.dtype == np.float32
    assert res.visible.shape == (5, 5) and res.visible.dtype == bool
    assert np.all(np.isfinite(res.tracks)) and np.all(np.isfinite(res.occlusion))
    assert np.all((res.uncertainty >= 0) & (res.uncertainty <= 1))
    np.testing.assert_array_equal(res.visible, (1 - res.occlusion) * (1 - res.uncertainty) > 0.5)
    # Chunks of 3 queries (the last padded) give what one chunk of 5 gives.
    tracker.query_chunk_size = 5
    try:
        whole = tracker.track(video, queries)
    finally:
        tracker.query_chunk_size = 3
    np.testing.assert_allclose(whole.tracks, res.tracks, atol=1e-3)
    np.testing.assert_allclose(whole.occlusion, res.occlusion, atol=1e-5)
    # Query order does not matter either.
    perm = np.array([3, 0, 4, 1, 2])
    shuffled = tracker.track(video, queries[perm])
    np.testing.assert_allclose(shuffled.tracks, res.tracks[perm], atol=1e-3)


def test_tracker_rejects_bad_inputs(tracker):
    video = random_video(t=2)
    with pytest.raises(ShapeError):
        tracker.track(video.astype(np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ShapeError):
        tracker.track(video, np.array([[2, 1.0, 1.0]], np.float32))  # frame out of range
    with pytest.raises(ConfigError):
        TapirTracker(tracker.model, resolution=(60, 64))
    with pytest.raises(ConfigError, match="causal"):
        tracker.track_online(video, np.zeros((1, 3), np.float32))


def test_coordinates_round_trip_through_the_model_resolution(boots_like):
    """With the refinement's output zeroed, the final track on a query's own frame is the
    query itself: video pixels -> model pixels -> video pixels is exact (pixel corners)."""
    model = nnx.clone(boots_like)
    model.pips_mlp_mixer.linear_1.kernel[...] = jnp.zeros_like(
        model.pips_mlp_mixer.linear_1.kernel[...]
    )
    model.pips_mlp_mixer.linear_1.bias[...] = jnp.zeros_like(
        model.pips_mlp_mixer.linear_1.bias[...]
    )
    # Same shapes as the tracker fixture's, so the compiled code is shared.
    tr = TapirTracker(model, resolution=RES, query_chunk_size=3, frame_chunk_size=2)
    video = random_video(seed=3)
    queries = np.array(
        [[0, 0.0, 0.0], [1, 47.5, 79.5], [2, 12.25, 33.75], [4, 48.0, 80.0]], np.float32
    )
    res = tr.track(video, queries)
    frames = queries[:, 0].astype(int)
    np.testing.assert_allclose(res.tracks[np.arange(4), frames], queries[:, [2, 1]], atol=1e-4)


def test_summarize_averages_the_last_iterate_of_each_resolution():
    its = [jnp.full((1, 1, 1), float(i)) for i in range(5)]
    traj = {"tracks": its, "occlusion": its, "expected_dist": its}
    out = summarize(traj, num_pips_iter=2)  # iterates 0 | 1 2 | 3 4
    np.testing.assert_allclose(np.asarray(out["tracks"]), (2.0 + 4.0) / 2)
    assert [float(x[0, 0, 0]) for x in out["unrefined_occlusion"]] == [0.0, 1.0, 2.0, 3.0]


def test_model_outputs_with_two_refinement_resolutions(boots_like):
    video = preprocess_frames(jnp.asarray(random_video(t=3, h=64, w=64, seed=4)))[None]
    queries = jnp.array([[[0, 20.0, 30.0], [2, 40.0, 10.0]]])
    fwd = jax.jit(
        lambda v, q: nnx.merge(*nnx.split(boots_like))(
            v, q, initial_resolution=(64, 64), refinement_resolutions=[(64, 64), (96, 96)]
        )
    )
    out = fwd(video, queries)
    p = boots_like.config.num_pips_iter
    assert out["tracks"].shape == (1, 2, 3, 2) and out["occlusion"].shape == (1, 2, 3)
    # Initialisation + num_pips_iter iterates per resolution; the last one is the final.
    assert len(out["unrefined_tracks"]) == 2 * p
    for key in ("tracks", "occlusion", "expected_dist"):
        assert np.all(np.isfinite(np.asarray(out[key])))
    vis = visibility(out["occlusion"], out["expected_dist"])
    want = (1 - jax.nn.sigmoid(out["occlusion"])) * (1 - jax.nn.sigmoid(out["expected_dist"])) > 0.5
    np.testing.assert_array_equal(np.asarray(vis), np.asarray(want))


@pytest.fixture(scope="module")
def causal_run(causal):
    """The causal model on whole clips, queries not pinned (what online tracking computes)."""
    graphdef, state = nnx.split(causal)

    @jax.jit
    def run(video_u8, queries):
        model = nnx.merge(graphdef, state)
        out = model(
            preprocess_frames(video_u8)[None],
            queries[None],
            initial_resolution=RES,
            pin_queries=False,
        )
        return out["tracks"][0], out["occlusion"][0], out["expected_dist"][0]

    return run


def test_online_equals_causal_model_on_the_whole_clip(causal, causal_run):
    video = random_video(t=5, h=64, w=64, seed=5)
    queries = np.array(
        [[0, 10.0, 20.0], [0, 33.5, 40.5], [0, 60.0, 5.0], [2, 30.0, 30.0]], np.float32
    )
    tracker = TapirTracker(causal, resolution=RES)
    online = tracker.track_online(iter(video), queries)
    tr, occ, expd = (
        np.asarray(a) for a in causal_run(jnp.asarray(video), jnp.asarray(queries[:3]))
    )
    np.testing.assert_allclose(online.tracks[:3], tr, atol=1e-3)
    np.testing.assert_allclose(online.occlusion[:3], jax.nn.sigmoid(occ), atol=1e-4)
    np.testing.assert_allclose(online.uncertainty[:3], jax.nn.sigmoid(expd), atol=1e-4)
    # A query on frame 2 starts there with a fresh state: like the clip from frame 2 on
    # (padded at the end to the same length, which a causal model cannot see).
    late = np.array([[0, 30.0, 30.0]] * 3, np.float32)
    sub = np.concatenate([video[2:], video[-1:].repeat(2, axis=0)])
    tr2, occ2, _ = (np.asarray(a) for a in causal_run(jnp.asarray(sub), jnp.asarray(late)))
    np.testing.assert_allclose(online.tracks[3, 2:], tr2[0, :3], atol=1e-3)
    np.testing.assert_allclose(online.occlusion[3, 2:], jax.nn.sigmoid(occ2[0, :3]), atol=1e-4)
    # Before its frame the point waits at its query position, not visible.
    np.testing.assert_allclose(online.tracks[3, :2], [[30.0, 30.0], [30.0, 30.0]])
    assert not online.visible[3, :2].any() and np.all(online.occlusion[3, :2] == 1.0)


def test_causal_model_does_not_look_ahead(causal_run):
    video = random_video(t=5, h=64, w=64, seed=6)
    changed = video.copy()
    changed[4] = 255 - changed[4]
    queries = jnp.array([[0, 10.0, 20.0], [0, 33.5, 40.5], [0, 60.0, 5.0]])
    a = [np.asarray(x) for x in causal_run(jnp.asarray(video), queries)]
    b = [np.asarray(x) for x in causal_run(jnp.asarray(changed), queries)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x[:, :4], y[:, :4], atol=1e-5)
    assert np.abs(a[0][:, 4] - b[0][:, 4]).max() > 1e-4


def test_tracker_accepts_a_checkpoint_path_or_params(boots_like, tmp_path):
    from jflow.tracking.tapir import model_to_haiku_params, save_tapir_checkpoint

    overrides = dict(extra_conv_layers=2, **TINY)
    path = save_tapir_checkpoint(boots_like, tmp_path / "tiny.npy")
    from_path = TapirTracker(path, resolution=RES, variant="bootstapir", **overrides)
    from_dict = TapirTracker(
        model_to_haiku_params(boots_like), resolution=RES, variant="bootstapir", **overrides
    )
    for tr in (from_path, from_dict):
        assert tr.model.config == boots_like.config
        np.testing.assert_array_equal(
            tr.model.pips_mlp_mixer.linear.kernel[...], boots_like.pips_mlp_mixer.linear.kernel[...]
        )
    with pytest.raises(ConfigError):
        TapirTracker(42)
