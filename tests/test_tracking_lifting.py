"""Lifting tracks to 3D: unprojection, depth alignment, invalid depth, temporal median."""

import jax.numpy as jnp
import numpy as np
import pytest

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.geometry.camera import PinholeIntrinsics, unproject
from jflow.tracking.lifting import align_depth, fill_invalid, lift_tracks, temporal_median


@pytest.fixture(scope="module")
def bridge(shared_data):
    with np.load(shared_data / "bridge_spoon" / "episode.npz") as data:
        return {k: data[k] for k in ("depth_m", "object_mask")}


K = PinholeIntrinsics.from_fovy(55.0, 256, 256)


def test_metric_lifting_matches_unproject(bridge):
    depth = bridge["depth_m"][:4]
    rng = np.random.default_rng(0)
    tracks = rng.uniform(10, 246, (4, 30, 2)).astype(np.float32)
    visible = np.ones((4, 30), bool)
    # The depth-edge test is off here: this checks the arithmetic of sampling and unprojection.
    flow = lift_tracks(tracks, visible, depth, K, max_depth_step=None)
    # Pixel centres: bilinear sampling returns the map's value exactly.
    centres = np.floor(tracks) + 0.5
    flow_c = lift_tracks(centres, visible, depth, K, max_depth_step=None)
    rows, cols = centres[..., 1].astype(int), centres[..., 0].astype(int)
    z = depth[np.arange(4)[:, None], rows, cols]
    np.testing.assert_allclose(flow_c.depth, z, rtol=1e-6)
    expected = np.asarray(unproject(jnp.asarray(centres), jnp.asarray(z), K))
    np.testing.assert_allclose(flow_c.points, expected, rtol=1e-5, atol=1e-6)
    assert flow.frame == "camera" and flow.visible.all()
    flow.validate()
    # Reprojecting the lifted points gives the tracks back.
    pts = np.asarray(flow.points)
    x = pts[..., 0] / pts[..., 2] * float(K.fx) + float(K.cx)
    np.testing.assert_allclose(x, tracks[..., 0], atol=1e-3)


@pytest.mark.parametrize("with_shift", [True, False])
def test_alignment_recovers_known_scale_and_shift(bridge, with_shift):
    depth = bridge["depth_m"][0].astype(np.float64)
    mask = bridge["object_mask"][0] > 0
    scale, shift = 2.5, (0.3 if with_shift else 0.0)
    relative = (depth - shift) / scale
    s, b = align_depth(relative, depth, mask, with_shift=with_shift)
    assert abs(s - scale) < 1e-4 and abs(b - shift) < 1e-4


def test_alignment_uses_only_valid_object_pixels(bridge):
    depth = bridge["depth_m"][0].astype(np.float64)
    mask = bridge["object_mask"][0] > 0
    relative = (depth - 0.2) / 3.0
    reference = depth.copy()
    ys, xs = np.nonzero(mask)
    reference[ys[:50], xs[:50]] = np.nan  # holes in the reference are skipped
    reference[~mask] = 100.0  # the background does not count
    s, b = align_depth(relative, reference, mask)
    assert abs(s - 3.0) < 1e-4 and abs(b - 0.2) < 1e-4


def test_alignment_errors(bridge):
    depth = bridge["depth_m"][0]
    with pytest.raises(DataError, match="empty"):
        align_depth(depth, depth, np.zeros_like(depth, bool))
    with pytest.raises(ShapeError, match=r"\[H, W\]"):
        align_depth(depth[:100], depth, depth > 0)
    with pytest.raises(DataError, match="valid depth"):
        align_depth(depth, np.zeros_like(depth), depth > 0)


def test_invalid_depth_masks_the_point_not_nan(bridge):
    depth = bridge["depth_m"][:3].copy()
    tracks = np.tile(
        np.array([[[100.5, 120.5], [30.5, 40.5], [200.5, 10.5]]], np.float32), (3, 1, 1)
    )
    depth[1, 120, 100] = np.nan  # point 0 at frame 1
    depth[:, 40, 30] = 0.0  # point 1 everywhere
    depth[2, 10, 200] = -1.0  # point 2 at frame 2
    visible = np.ones((3, 3), bool)
    visible[0, 2] = False  # the tracker says occluded
    flow = lift_tracks(tracks, visible, depth, K)
    flow.validate()  # finite everywhere
    expected = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]], bool)
    np.testing.assert_array_equal(flow.visible, expected)
    # Masked depths are filled from the nearest valid frame of the point, or 0.
    assert flow.depth[1, 0] == pytest.approx(depth[0, 120, 100])
    assert np.all(np.asarray(flow.depth)[:, 1] == 0)
    assert flow.depth[2, 2] == pytest.approx(depth[1, 10, 200])


def test_lift_rejects_mismatched_depth(bridge):
    tracks = np.zeros((3, 2, 2), np.float32) + 5
    with pytest.raises(ShapeError, match="depth video"):
        lift_tracks(tracks, np.ones((3, 2), bool), bridge["depth_m"][:2], K)
    with pytest.raises(ShapeError, match="visible"):
        lift_tracks(tracks, np.ones((2, 3), bool), bridge["depth_m"][:3], K)


def test_temporal_median_removes_spikes(bridge):
    rng = np.random.default_rng(0)
    t_len, n = 28, 40
    clean = 0.9 + 0.01 * np.sin(np.arange(t_len) / 5)[:, None] + np.zeros((t_len, n))
    noisy = clean.copy()
    # Isolated spikes (one frame in six per point) of +-0.5 m.
    spikes = (np.arange(t_len)[:, None] + np.arange(n)[None, :]) % 6 == 0
    noisy[spikes] += rng.choice([-0.5, 0.5], spikes.sum())
    valid = np.ones((t_len, n), bool)
    filtered = temporal_median(noisy, valid, window=5)
    err_before = np.abs(noisy - clean).max()
    err_after = np.abs(filtered - clean).max()
    assert err_before >= 0.49 and err_after < 0.02
    # Invalid samples do not enter the median.
    valid[5, 0] = False
    noisy[5, 0] = 1e3
    assert temporal_median(noisy, valid, 3)[4, 0] < 2.0
    np.testing.assert_array_equal(temporal_median(noisy, valid, 1), noisy.astype(np.float32))
    with pytest.raises(ConfigError, match="odd"):
        temporal_median(noisy, valid, 4)
    # Through lift_tracks: a spike in one frame of the depth video is removed.
    depth = np.repeat(bridge["depth_m"][:1], 7, axis=0).copy()
    depth[3, 120, 100] += 0.5
    tracks = np.full((7, 1, 2), [100.5, 120.5], np.float32)
    raw = lift_tracks(tracks, np.ones((7, 1), bool), depth, K)
    smooth = lift_tracks(tracks, np.ones((7, 1), bool), depth, K, median_window=3)
    assert raw.depth[3, 0] - raw.depth[0, 0] == pytest.approx(0.5, abs=1e-5)
    assert smooth.depth[3, 0] == pytest.approx(smooth.depth[0, 0], abs=1e-6)


def test_fill_invalid_nearest_frame():
    values = np.array([[1.0], [9.0], [3.0], [9.0]])
    valid = np.array([[True], [False], [True], [False]])
    np.testing.assert_allclose(fill_invalid(values, valid)[:, 0], [1, 1, 3, 3])
