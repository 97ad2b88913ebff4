"""ADE / FDE of 3D flows over visible points, on a hand example."""

import numpy as np
import pytest

from jflow.errors import DataError, ShapeError
from jflow.metrics.flow3d import flow_errors


def test_ade_fde_hand_example():
    gt = np.zeros((3, 2, 3))
    pred = gt.copy()
    pred[:, 0, 0] = [0.0, 0.1, 0.2]  # point 0 drifts along x
    pred[:, 1, 2] = [0.3, 0.3, 0.4]  # point 1 is off in z
    visible = np.array([[True, True], [True, False], [True, True]])
    err = flow_errors(pred, gt, visible)
    # visible errors: 0, 0.3 | 0.1 | 0.2, 0.4
    assert err.ade == pytest.approx((0 + 0.3 + 0.1 + 0.2 + 0.4) / 5)
    assert err.fde == pytest.approx((0.2 + 0.4) / 2)
    assert (err.num_visible, err.num_final) == (5, 2)
    # An invisible point's (even huge or NaN) error does not count.
    pred[1, 1] = np.nan
    assert flow_errors(pred, gt, visible).ade == pytest.approx(err.ade)


def test_flow_error_input_errors():
    gt = np.zeros((3, 2, 3))
    with pytest.raises(ShapeError):
        flow_errors(gt[:, :1], gt, np.ones((3, 2), bool))
    with pytest.raises(DataError, match="no visible"):
        flow_errors(gt, gt, np.zeros((3, 2), bool))
    vis = np.ones((3, 2), bool)
    vis[-1] = False
    with pytest.raises(DataError, match="last frame"):
        flow_errors(gt, gt, vis)
