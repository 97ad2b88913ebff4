"""The first-frame references of jflow.evaluation.bounds on synthetic clips with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from jflow.errors import ConfigError, DataError
from jflow.evaluation.baselines import MeanFlowBaseline
from jflow.evaluation.bounds import FirstFrameRidge, same_task_sample_ade
from jflow.evaluation.clips import EvalClip
from jflow.geometry.camera import PinholeIntrinsics
from jflow.metrics.flow3d import flow_errors

T, N = 6, 12


def _clip(index: int, points: np.ndarray, task: str = "slide") -> EvalClip:
    return EvalClip(
        index=index,
        task_id=task,
        instruction=task,
        seed=index,
        rgb=np.zeros((8, 8, 3), np.uint8),
        depth=np.ones((8, 8), np.float32),
        intrinsics=PinholeIntrinsics(fx=8.0, fy=8.0, cx=4.0, cy=4.0, width=8, height=8),
        world_from_camera=np.eye(4),
        points=points,
        visible=np.ones(points.shape[:2], bool),
        grid=np.zeros((T, 2, 2, 4), np.float32),
    )


def _start_dependent(rng: np.random.Generator, count: int, start: int = 0) -> list[EvalClip]:
    """The object starts ``s`` to the side (visible) and always ends at the same place, so the
    motion is ``(1 - s)``-long: the first frame determines it up to small noise."""
    base = rng.normal(size=(N, 3)) * 0.05
    phase = np.linspace(0.0, 1.0, T)[:, None, None]
    clips = []
    for i in range(count):
        s = rng.uniform(-0.1, 0.1)
        p0 = base + np.array([s, 0.0, 0.0])
        goal = base + np.array([0.3, 0.0, 0.0]) + rng.normal(0.0, 0.002, 3)
        clips.append(_clip(start + i, p0 + phase * (goal - p0)))
    return clips


def _ade(predict, clips) -> float:
    return float(np.mean([flow_errors(predict(c), c.points, c.visible).ade for c in clips]))


def test_ridge_reads_the_start_state_the_mean_flow_ignores():
    rng = np.random.default_rng(0)
    train, held = _start_dependent(rng, 40), _start_dependent(rng, 20, start=100)
    mean_ade = _ade(MeanFlowBaseline(train).predict, held)
    ridge_ade = _ade(FirstFrameRidge(train, components=1).predict, held)
    assert mean_ade > 0.02  # the start shifts the motion by up to 10 cm
    assert ridge_ade < 0.2 * mean_ade
    # With no components the ridge is the mean flow.
    assert _ade(FirstFrameRidge(train, components=0).predict, held) == pytest.approx(mean_ade)


def test_random_same_task_clip_scores_sqrt2_times_the_mean_for_unpredictable_motion():
    rng = np.random.default_rng(1)
    phase = np.linspace(0.0, 1.0, T)[:, None, None]
    base = rng.normal(size=(N, 3)) * 0.05

    def clips(count: int, start: int) -> list[EvalClip]:
        # The end point is a 3D Gaussian around a fixed goal: nothing in frame 0 predicts it.
        out = []
        for i in range(count):
            goal = np.array([0.3, 0.0, 0.0]) + rng.normal(0.0, 0.02, 3)
            out.append(_clip(start + i, base + phase * goal))
        return out

    train, held = clips(400, 0), clips(60, 1000)
    mean_ade = _ade(MeanFlowBaseline(train).predict, held)
    sample_ade = float(np.mean([same_task_sample_ade(c, train) for c in held]))
    assert sample_ade / mean_ade == pytest.approx(np.sqrt(2.0), rel=0.1)
    # And a linear reading of frame 0 cannot help: it stays within 3% of the mean flow.
    assert _ade(FirstFrameRidge(train, components=2).predict, held) < 1.03 * mean_ade


def test_bad_input():
    rng = np.random.default_rng(2)
    train = _start_dependent(rng, 3)
    with pytest.raises(ConfigError, match="components"):
        FirstFrameRidge(train, components=-1)
    with pytest.raises(ConfigError, match="ridge"):
        FirstFrameRidge(train, ridge=0.0)
    with pytest.raises(DataError, match="at least one"):
        FirstFrameRidge([])
    other = _clip(9, train[0].points, task="kettle")
    with pytest.raises(DataError, match="kettle"):
        FirstFrameRidge(train).predict(other)
    with pytest.raises(DataError, match="kettle"):
        same_task_sample_ade(other, train)
