"""TAPIR training batches from kitchen ground truth: query sampling, shapes, a short training run."""

import numpy as np
import pytest

from jflow.errors import DataError, ShapeError
from jflow.tracking.tapir import (
    FREEZE_BACKBONE,
    TapirConfig,
    init_tapir,
    make_optimizer,
    make_train_step,
)
from jflow.tracking.tapir.kitchen_data import (
    example_from_clip,
    first_visible_queries,
    sample_training_queries,
    stack_examples,
    training_example,
)


@pytest.fixture(scope="module")
def episodes():
    from jflow.sim.episodes import KitchenWorld

    with KitchenWorld(resolution=64) as world:
        return [
            world.render_episode(task, 0, frames=4, num_points=48)
            for task in ("open_slide_cabinet", "open_microwave")
        ]


def test_queries_are_sampled_only_on_visible_points():
    rng = np.random.default_rng(0)
    visible = rng.random((6, 40)) < 0.3
    visible[:, :5] = False  # never visible: must never be queried
    queryable = set(np.flatnonzero(visible.any(axis=0)))
    frames_seen = set()
    for _ in range(50):
        idx, frames, valid = sample_training_queries(visible, 16, rng)
        assert valid.all() and len(set(idx)) == 16  # distinct tracks when there are enough
        assert visible[frames, idx].all()
        assert set(idx) <= queryable
        frames_seen |= set(frames.tolist())
    assert frames_seen == set(range(6))  # any visible frame, not only the first

    # Only 3 queryable tracks for 5 queries: all 3 are used, the 2 padding slots are invalid.
    few = np.zeros((4, 10), bool)
    few[2, 1] = few[0, 4] = few[3, 4] = few[1, 7] = True
    idx, frames, valid = sample_training_queries(few, 5, rng)
    assert valid.tolist() == [True, True, True, False, False]
    assert sorted(idx[:3].tolist()) == [1, 4, 7]
    assert few[frames, idx].all()
    with pytest.raises(DataError, match="no ground-truth track is visible"):
        sample_training_queries(np.zeros((4, 10), bool), 5, rng)


def test_training_batch_from_kitchen_episodes(episodes):
    rng = np.random.default_rng(1)
    examples = [example_from_clip(ep.clip, 24, rng) for ep in episodes]
    batch = stack_examples(examples)
    assert batch["video"].shape == (2, 4, 64, 64, 3) and batch["video"].dtype == np.uint8
    assert batch["query_points"].shape == (2, 24, 3)
    assert batch["target_points"].shape == (2, 24, 4, 2)
    assert batch["occluded"].shape == (2, 24, 4) and batch["occluded"].dtype == bool
    assert batch["mask"].shape == (2, 24, 4)
    for ex, ep in zip(examples, episodes, strict=True):
        t = ex["query_points"][:, 0].astype(int)
        q = np.arange(24)
        # The query is the ground-truth position (t, y, x) at a frame where the point is visible.
        np.testing.assert_array_equal(ex["query_points"][:, 2], ex["target_points"][q, t, 0])
        np.testing.assert_array_equal(ex["query_points"][:, 1], ex["target_points"][q, t, 1])
        assert not ex["occluded"][q, t].any()
        # Every target track is one of the episode's ground-truth tracks, with its visibility.
        tracks = np.asarray(ep.clip.flow.tracks).transpose(1, 0, 2)  # [N, T, 2]
        vis = np.asarray(ep.clip.flow.visible).T
        for k in range(24):
            match = np.flatnonzero(np.all(tracks == ex["target_points"][k], axis=(1, 2)))
            assert match.size >= 1
            np.testing.assert_array_equal(~vis[match[0]], ex["occluded"][k])
    with pytest.raises(ShapeError, match="equal T, H, W and Q"):
        stack_examples([examples[0], example_from_clip(episodes[1].clip, 8, rng)])
    with pytest.raises(ShapeError, match="tracks must be"):
        training_example(episodes[0].clip.video, np.zeros((3, 5, 2)), np.ones((3, 5), bool), 4, rng)


def test_first_visible_queries_by_hand():
    tracks = np.zeros((3, 3, 2), np.float32)  # [T, N, 2]
    tracks[:, 0] = [[1, 2], [3, 4], [5, 6]]
    tracks[:, 1] = [[np.nan, np.nan], [7, 8], [9, 10]]
    tracks[:, 2] = [[0, 0], [0, 0], [0, 0]]
    visible = np.array([[True, True, False], [True, True, False], [False, True, False]])
    queries, gt_tracks, gt_occ = first_visible_queries(tracks, visible)
    # Track 1 has no position on frame 0, so it is first visible (and queried) on frame 1;
    # track 2 is never visible and gets no query.
    np.testing.assert_array_equal(queries, [[0, 2, 1], [1, 8, 7]])
    np.testing.assert_array_equal(gt_tracks[0], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(gt_occ, [[False, False, True], [True, False, False]])
    assert np.isfinite(gt_tracks).all()


@pytest.mark.slow
def test_two_training_steps_on_kitchen_ground_truth(episodes):
    cfg = TapirConfig(
        channels_per_group=(8, 16, 32, 32),
        blocks_per_group=(1, 1, 1, 1),
        initial_conv_channels=8,
        mixer_hidden_dim=32,
        num_mixer_blocks=1,
        num_pips_iter=1,
    )
    model = init_tapir(cfg, seed=0)
    rng = np.random.default_rng(2)
    batch = stack_examples([example_from_clip(ep.clip, 16, rng) for ep in episodes])
    # The backbone stays frozen to halve the compilation (the experiment trains everything).
    optimizer = make_optimizer(model, learning_rate=3e-3, weight_decay=0.0, wrt=FREEZE_BACKBONE)
    step = make_train_step(initial_resolution=(32, 32))
    # Each call returns the loss before its update: losses[2] is the loss after two steps.
    losses = [float(step(model, optimizer, batch)["loss"]) for _ in range(3)]
    assert np.all(np.isfinite(losses)), losses
    assert losses[2] < 0.95 * losses[0], losses  # 17.98 -> 17.28 -> 16.09 on 2026-11-21
