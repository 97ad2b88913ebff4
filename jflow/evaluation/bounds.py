"""How much of a held-out clip's motion its first frame can tell: references for the flow metrics.

ADE rewards a point estimate near the conditional mean of the future given what the predictor
sees. Two references bound what a flow model conditioned on the first frame and the instruction
can score on a dataset:

- :class:`FirstFrameRidge`: per task, a ridge regression of the camera-frame displacement field
  on the first-frame point cloud in the *world* frame (its top ``k`` principal components over
  the task's training clips). It sees the object's initial state without the camera jitter, which
  the model has to see through, so it is a generous linear reading of the first frame. When it
  does not beat the task's mean flow, the first frame carries next to nothing about the motion
  beyond the task, and no point estimate can beat the mean flow by more than noise.
- :func:`same_task_sample_ade`: the mean ADE of transferring a *random* training clip of the
  clip's own task, i.e. the score of a perfect sampler of the task's motions when the first frame
  tells nothing. For independent samples it sits near ``sqrt(2)`` times the mean flow's ADE
  (the distance between two draws against the distance to the mean), which is why a diffusion
  model's single samples are compared with the baselines through the mean of several samples.

``experiments/flow_bounds.py`` prints both beside the mean flow for a pair of datasets
(docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from jflow.errors import ConfigError, DataError
from jflow.evaluation.baselines import camera_displacement, transfer_displacement
from jflow.evaluation.clips import EvalClip
from jflow.metrics.flow3d import flow_errors


def _by_task(clips: Sequence[EvalClip]) -> dict[str, list[EvalClip]]:
    out: dict[str, list[EvalClip]] = {}
    for clip in clips:
        out.setdefault(clip.task_id, []).append(clip)
    return out


class FirstFrameRidge:
    """Per task: displacement field ``~ mean + W z``, ``z`` the first-frame world points projected
    on their top ``components`` principal directions over the task's training clips."""

    def __init__(self, train_clips: Sequence[EvalClip], components: int = 2, ridge: float = 1e-3):
        if components < 0:
            raise ConfigError(f"components must be >= 0, got {components}")
        if not ridge > 0:
            raise ConfigError(f"ridge must be > 0, got {ridge}")
        if not train_clips:
            raise DataError("the first-frame ridge needs at least one training clip")
        self.components = int(components)
        self.fits: dict[str, tuple[np.ndarray, ...]] = {}
        for task, clips in _by_task(train_clips).items():
            x = np.stack([c.points[0].ravel() for c in clips])
            y = np.stack([camera_displacement(c).ravel() for c in clips])
            x_mean, y_mean = x.mean(0), y.mean(0)
            k = min(self.components, len(clips) - 1)  # 0: the plain mean flow
            _, _, vt = np.linalg.svd(x - x_mean, full_matrices=False)
            basis = vt[:k].T
            z = (x - x_mean) @ basis
            weights = np.linalg.solve(z.T @ z + ridge * np.eye(k), z.T @ (y - y_mean))
            self.fits[task] = (x_mean, y_mean, basis, weights)

    def predict(self, clip: EvalClip) -> Float[np.ndarray, "T N 3"]:
        """World points: ``clip``'s initial points moved by the regressed displacement field."""
        if clip.task_id not in self.fits:
            raise DataError(
                f"task {clip.task_id!r} has no training clip; known: {', '.join(sorted(self.fits))}"
            )
        x_mean, y_mean, basis, weights = self.fits[clip.task_id]
        z = (clip.points[0].ravel() - x_mean) @ basis
        disp = (y_mean + z @ weights).reshape(clip.points.shape)
        return transfer_displacement(clip, disp)


def same_task_sample_ade(clip: EvalClip, train_clips: Sequence[EvalClip]) -> float:
    """Mean ADE (m) over the training clips of ``clip``'s task, each clip's displacement field
    transferred onto ``clip``'s initial points."""
    same = [c for c in train_clips if c.task_id == clip.task_id]
    if not same:
        raise DataError(f"task {clip.task_id!r} has no training clip")
    errors = [
        flow_errors(
            transfer_displacement(clip, camera_displacement(c)), clip.points, clip.visible
        ).ade
        for c in same
    ]
    return float(np.mean(errors))


__all__ = ["FirstFrameRidge", "same_task_sample_ade"]
