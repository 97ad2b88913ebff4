"""TAP-Vid metrics on hand-made examples whose answers are known."""

import numpy as np
import pytest

from jflow.errors import ConfigError, ShapeError
from jflow.metrics.tapvid import (
    evaluation_frames,
    sample_queries_first,
    sample_queries_strided,
    tapvid_metrics,
)

T = 6


def example(n=3):
    rng = np.random.default_rng(0)
    tracks = rng.uniform(20, 230, (n, T, 2))
    occluded = np.zeros((n, T), bool)
    queries = np.stack([np.zeros(n), tracks[:, 0, 1], tracks[:, 0, 0]], 1)
    return queries, occluded, tracks


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_perfect_tracks_score_one(mode):
    q, occ, tracks = example()
    m = tapvid_metrics(q, occ, tracks, occ, tracks, mode)
    for key in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"):
        assert m[key] == 1.0


def test_a_track_off_by_3px_counts_at_4_8_16_only():
    q, occ, tracks = example(n=1)
    pred = tracks + np.array([3.0, 0.0])
    m = tapvid_metrics(q, occ, tracks, occ, pred, "strided")
    # Every evaluated frame (the query frame excepted) is off by 3 px.
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 1, 1, 1]
    assert [m[f"jaccard_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 1, 1, 1]
    assert m["average_pts_within_thresh"] == pytest.approx(0.6)
    assert m["average_jaccard"] == pytest.approx(0.6)
    # Distances are strict: exactly 4 px is not within 4.
    m4 = tapvid_metrics(q, occ, tracks, occ, tracks + np.array([0.0, 4.0]), "strided")
    assert m4["pts_within_4"] == 0 and m4["pts_within_8"] == 1


def test_all_occluded_predictions():
    q, occ, tracks = example()
    pred_occ = np.ones_like(occ)
    m = tapvid_metrics(q, occ, tracks, pred_occ, tracks, "first")
    assert m["average_jaccard"] == 0.0  # no true positive
    assert m["occlusion_accuracy"] == 0.0  # every evaluated point is visible
    assert m["average_pts_within_thresh"] == 1.0  # positions count regardless of occlusion


def test_false_positive_on_an_occluded_point():
    q, occ, tracks = example(n=2)
    gt_occ = occ.copy()
    gt_occ[1, 3:] = True  # point 1 occluded in frames 3, 4, 5
    m = tapvid_metrics(q, gt_occ, tracks, occ, tracks, "first")  # predicted always visible
    # first mode evaluates frames 1..5: 10 point-frames, 7 visible, 3 false positives.
    assert m["occlusion_accuracy"] == pytest.approx(7 / 10)
    assert m["jaccard_1"] == pytest.approx(7 / (7 + 3))
    assert m["pts_within_1"] == 1.0


def test_query_modes_select_the_evaluation_frames():
    first = evaluation_frames(np.array([0, 2, 5]), T, "first")
    np.testing.assert_array_equal(first[0], [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(first[1], [0, 0, 0, 1, 1, 1])
    assert not first[2].any()
    strided = evaluation_frames(np.array([0, 2]), T, "strided")
    np.testing.assert_array_equal(strided[1], [1, 1, 0, 1, 1, 1])
    # A prediction wrong only before the query frame costs nothing in "first" mode.
    q, occ, tracks = example(n=1)
    q[0, 0] = 3
    pred = tracks.copy()
    pred[0, :3] += 50
    assert tapvid_metrics(q, occ, tracks, occ, pred, "first")["average_jaccard"] == 1.0
    assert tapvid_metrics(q, occ, tracks, occ, pred, "strided")["average_jaccard"] < 1.0


def test_other_resolutions_are_rescaled_to_256():
    q, occ, tracks = example(n=1)
    # At 512x128, an error of 6 px in x and 1.5 px in y is (3, 3) px at 256x256: 4.24 px.
    scale = np.array([2.0, 0.5])
    m = tapvid_metrics(
        q, occ, tracks * scale, occ, tracks * scale + [6.0, 1.5], "strided", (512, 128)
    )
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 0, 1, 1]


def test_query_sampling():
    occ = np.array([[True, True, False, False, False, False], [False] * 6, [True] * 6])
    tracks = np.arange(3 * T * 2, dtype=float).reshape(3, T, 2)
    q, idx = sample_queries_first(occ, tracks)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_array_equal(q[:, 0], [2, 0])
    np.testing.assert_allclose(q[0, 1:], tracks[0, 2, ::-1])  # (y, x)
    q, idx = sample_queries_strided(occ, tracks, stride=5)
    np.testing.assert_array_equal(q[:, 0], [0, 5, 5])  # frame 0: track 1; frame 5: tracks 0, 1
    np.testing.assert_array_equal(idx, [1, 0, 1])


def test_bad_input():
    q, occ, tracks = example()
    with pytest.raises(ConfigError, match="query_mode"):
        tapvid_metrics(q, occ, tracks, occ, tracks, "last")
    with pytest.raises(ShapeError, match="pred_tracks"):
        tapvid_metrics(q, occ, tracks, occ, tracks[:, :-1], "first")
    bad = tracks.copy()
    bad[0, 2] = np.nan
    with pytest.raises(ShapeError, match="NaN"):
        tapvid_metrics(q, occ, tracks, occ, bad, "first")
