"""TAPIR's losses by hand, and a few training steps on a synthetic clip with known tracks."""

import numpy as np
import pytest

from jflow.tracking.tapir import (
    TapirConfig,
    batch_from_tracks,
    init_tapir,
    make_eval_loss,
    make_optimizer,
    make_train_step,
    tapir_loss,
    tapnet_loss,
)
from jflow.tracking.tapir.train import FREEZE_BACKBONE


def bce(logit, target):
    return np.log1p(np.exp(-abs(logit))) + max(logit, 0) - logit * target


def test_tapnet_loss_by_hand():
    tracks = np.array([[[[10.0, 10.0], [20.0, 20.0], [0.0, 0.0]]]], np.float32)
    target = np.array([[[[10.0, 13.0], [20.0, 30.0], [50.0, 50.0]]]], np.float32)
    occluded = np.array([[[0, 0, 1]]], np.float32)
    occ_logits = np.array([[[0.0, -1.0, 2.0]]], np.float32)
    expd_logits = np.array([[[1.0, -1.0, 3.0]]], np.float32)
    pos, occ, prob = tapnet_loss(tracks, occ_logits, target, occluded, (256, 256), expd_logits)
    # Errors 3 px (< delta 4: 3^2 / 2) and 10 px (4 * (10 - 2)); the occluded frame is ignored.
    np.testing.assert_allclose(pos, (4.5 + 32.0 + 0.0) / 3 * 0.05, rtol=1e-5)
    np.testing.assert_allclose(occ, (bce(0.0, 0) + bce(-1.0, 0) + bce(2.0, 1)) / 3, rtol=1e-5)
    # 3 px is within 6 px (target 0), 10 px is not (target 1); the occluded frame is ignored.
    np.testing.assert_allclose(prob, (bce(1.0, 0) + bce(-1.0, 1) + 0.0) / 3, rtol=1e-5)

    # Positions are compared at 256x256: on a 128 (h) x 512 (w) video, x halves and y
    # doubles, so the y errors of 3 and 10 px become 6 and 20 px (both beyond delta 4).
    pos2, _, _ = tapnet_loss(tracks, occ_logits, target, occluded, (128, 512), expd_logits)
    np.testing.assert_allclose(pos2, (4 * (6 - 2) + 4 * (20 - 2)) / 3 * 0.05, rtol=1e-5)


def test_tapir_loss_sums_every_iterate():
    rng = np.random.default_rng(0)
    shape = (1, 2, 3)
    target = rng.uniform(0, 64, shape + (2,)).astype(np.float32)
    occluded = rng.random(shape) < 0.3
    its = [
        (
            rng.uniform(0, 64, shape + (2,)).astype(np.float32),
            rng.normal(size=shape).astype(np.float32),
            rng.normal(size=shape).astype(np.float32),
        )
        for _ in range(3)
    ]
    outputs = {
        "tracks": its[2][0],
        "occlusion": its[2][1],
        "expected_dist": its[2][2],
        "unrefined_tracks": [its[0][0], its[1][0]],
        "unrefined_occlusion": [its[0][1], its[1][1]],
        "unrefined_expected_dist": [its[0][2], its[1][2]],
    }
    total, scalars = tapir_loss(outputs, target, occluded, (64, 64))
    want = sum(sum(tapnet_loss(t, o, target, occluded, (64, 64), e)) for t, o, e in its)
    np.testing.assert_allclose(total, want, rtol=1e-5)
    assert set(scalars) >= {"loss", "position_loss", "occlusion_loss", "expected_dist_loss"}


def square_clip(num_frames=4, size=64, side=20, step=(3, 2), seed=0):
    """A textured square translating by ``step`` (dx, dy) px per frame over a plain background."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    video = np.full((num_frames, size, size, 3), 90, np.uint8)
    x0, y0 = 12, 14
    for t in range(num_frames):
        x, y = x0 + step[0] * t, y0 + step[1] * t
        video[t, y : y + side, x : x + side] = texture
    # Points on the square (pixel centres), queried on frame 0.
    offsets = np.array([[4.5, 5.5], [10.5, 10.5], [15.5, 3.5], [6.5, 16.5]], np.float32)  # (x, y)
    queries = np.concatenate([np.zeros((4, 1)), offsets[:, ::-1] + [y0, x0]], axis=1).astype(
        np.float32
    )
    tracks = np.stack(
        [offsets + [x0 + step[0] * t, y0 + step[1] * t] for t in range(num_frames)], axis=1
    )
    return video, queries, tracks.astype(np.float32), np.ones(tracks.shape[:2], bool)


@pytest.mark.slow
def test_a_few_training_steps_reduce_the_loss():
    cfg = TapirConfig(
        channels_per_group=(8, 16, 32, 32),
        blocks_per_group=(1, 1, 1, 1),
        initial_conv_channels=8,
        mixer_hidden_dim=32,
        num_mixer_blocks=1,
        num_pips_iter=1,
    )
    model = init_tapir(cfg, seed=0)
    video, queries, tracks, visible = square_clip()
    batch = batch_from_tracks(video, queries, tracks, visible)
    assert batch["video"].shape == (1, 4, 64, 64, 3) and batch["occluded"].dtype == bool
    # Fine-tuning with the backbone frozen compiles in about half the time of a full step
    # (a full step was checked by hand to reduce this loss as well).
    optimizer = make_optimizer(model, learning_rate=3e-3, weight_decay=0.0, wrt=FREEZE_BACKBONE)
    backbone = np.asarray(model.features.resnet.initial_conv.kernel[...]).copy()
    mixer = np.asarray(model.pips_mlp_mixer.linear.kernel[...]).copy()
    step = make_train_step(initial_resolution=(64, 64))
    evaluate = make_eval_loss(initial_resolution=(64, 64))
    before = float(evaluate(model, batch)["loss"])
    losses = [float(step(model, optimizer, batch)["loss"]) for _ in range(6)]
    after = float(evaluate(model, batch)["loss"])
    assert np.all(np.isfinite(losses))
    assert losses[0] == pytest.approx(before, rel=1e-4)
    assert after < 0.6 * before, (before, losses, after)
    np.testing.assert_array_equal(model.features.resnet.initial_conv.kernel[...], backbone)
    assert np.abs(np.asarray(model.pips_mlp_mixer.linear.kernel[...]) - mixer).max() > 1e-4
