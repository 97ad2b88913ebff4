"""Closed-loop plan check (3DFlowAction section 4.1): fit, render, verify, resample.

For each sampled flow: fit the object's rigid motion between the first and last frame robustly
(:func:`jflow.geometry.robust_rigid_fit`, trimming the worst ``trim_fraction`` of points by
residual), render the predicted final scene by moving the object's points of the current RGB-D
view with that motion (:func:`jflow.planning.splatting.render_moved_object`), and ask a
:class:`~jflow.planning.verifier.Verifier`. Flows are sampled until one is accepted or
``max_attempts`` sampler calls have been made.

The planner takes flows, not networks: the sampler is any callable ``sampler(attempt) ->
sequence of ObjectFlow`` (e.g. a closure over a trained model and a PRNG key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import jaxlie
import numpy as np

from jflow.errors import ConfigError, GeometryError
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics
from jflow.geometry.rigid import RigidFit, robust_rigid_fit
from jflow.planning.splatting import SplatImage, render_moved_object
from jflow.planning.verifier import PlanProposal, RuleVerifier, Verdict, Verifier
from jflow.runtime import planning_jit

FlowSampler = Callable[[int], Sequence[ObjectFlow]]
"""``sampler(attempt)`` returns one or more flows for the same observation."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """The current RGB-D view: ``rgb [H, W, 3]`` uint8, ``depth [H, W]`` (m, 0 = unknown),
    the object's mask, the intrinsics and ``camera_pose`` = ``world_from_camera`` (OpenCV)."""

    rgb: np.ndarray
    depth: np.ndarray
    object_mask: np.ndarray
    intrinsics: PinholeIntrinsics
    camera_pose: jaxlie.SE3


@dataclasses.dataclass(frozen=True)
class PlanCheckConfig:
    trim_fraction: float = 0.2
    """Fraction of points (largest residuals) the robust fit ignores."""
    max_attempts: int = 3
    """Sampler calls before giving up."""
    splat_radius: int = 1

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 <= self.trim_fraction < 1:
            raise ConfigError(f"trim_fraction must be in [0, 1), got {self.trim_fraction}")


@dataclasses.dataclass(frozen=True)
class PlanCheckResult:
    """The outcome: the accepted flow (world frame) and its fit, or ``accepted = False`` with
    every verdict so the caller can say why no plan exists."""

    accepted: bool
    flow: ObjectFlow | None
    fit: RigidFit | None
    predicted: SplatImage | None
    verdicts: tuple[Verdict, ...]
    attempts: int

    @property
    def reason(self) -> str:
        if self.accepted:
            return self.verdicts[-1].reason
        reasons = "; ".join(f"[{i}] {v.reason}" for i, v in enumerate(self.verdicts))
        return f"no flow accepted after {self.attempts} attempt(s): {reasons}"


def fit_object_motion(flow: ObjectFlow, trim_fraction: float = 0.2) -> RigidFit:
    """The robust rigid fit ``frame_last_from_frame_0`` of the flow's visible points (in the
    flow's frame). Raises :class:`GeometryError` when fewer than 3 points are visible at both
    ends, or they are degenerate."""
    pts = np.asarray(flow.points, np.float32)
    vis = np.asarray(flow.visible, bool)
    both = vis[0] & vis[-1] & np.all(np.isfinite(pts[0]), -1) & np.all(np.isfinite(pts[-1]), -1)
    if both.sum() < 3:
        raise GeometryError(
            f"need at least 3 points visible at the first and last frame to fit the motion, got {int(both.sum())}"
        )
    src = np.where(both[:, None], pts[0], 0.0)
    dst = np.where(both[:, None], pts[-1], 0.0)
    fit = _robust_fit(
        jnp.asarray(src), jnp.asarray(dst), jnp.asarray(both), trim_fraction=trim_fraction
    )
    if not bool(fit.valid):
        raise GeometryError(
            "the flow's points are coincident or collinear: no rigid motion can be fitted"
        )
    return fit


_robust_fit = planning_jit(
    robust_rigid_fit, static_argnames=("iterations", "with_scale", "collinear_tol")
)


def render_prediction(
    observation: Observation, motion_world: jaxlie.SE3, radius: int = 1
) -> SplatImage:
    """The predicted final view: the object's points moved by the world-frame motion."""
    cam = observation.camera_pose
    motion_cam = cam.inverse() @ motion_world @ cam
    return render_moved_object(
        jnp.asarray(observation.rgb, jnp.float32),
        jnp.asarray(observation.depth, jnp.float32),
        jnp.asarray(observation.object_mask, bool),
        observation.intrinsics,
        motion_cam,
        radius=radius,
    )


def check_plan(
    sampler: FlowSampler,
    instruction: str,
    observation: Observation | None = None,
    verifier: Verifier | None = None,
    config: PlanCheckConfig = PlanCheckConfig(),
) -> PlanCheckResult:
    """Sample flows until the verifier accepts one (module docs).

    Camera-frame flows are moved to the world frame with ``observation.camera_pose``. Flows that
    cannot be fitted are rejected with the reason, not raised.
    """
    verifier = RuleVerifier() if verifier is None else verifier
    verdicts: list[Verdict] = []
    for attempt in range(config.max_attempts):
        flows = list(sampler(attempt))
        if not flows:
            raise ConfigError("the flow sampler returned no flows")
        world = []
        for flow in flows:
            if flow.frame != "world":
                if observation is None:
                    raise ConfigError("camera-frame flows need an observation with a camera pose")
                flow = flow.to_world(observation.camera_pose)
            world.append(flow)
        for i, flow in enumerate(world):
            others = tuple(world[:i] + world[i + 1 :])
            try:
                fit = fit_object_motion(flow, config.trim_fraction)
            except GeometryError as err:
                verdicts.append(Verdict(False, str(err)))
                continue
            if not np.all(np.isfinite(np.asarray(fit.target_from_source.wxyz_xyz))):
                verdicts.append(Verdict(False, "flow contains NaN or inf"))
                continue
            predicted = None
            if observation is not None:
                predicted = render_prediction(
                    observation, fit.target_from_source, config.splat_radius
                )
            proposal = PlanProposal(
                instruction=instruction,
                flow=flow,
                fit=fit,
                current_image=None if observation is None else np.asarray(observation.rgb),
                predicted_image=None
                if predicted is None
                else np.asarray(predicted.image).clip(0, 255).astype(np.uint8),
                other_flows=others,
            )
            verdict = verifier(proposal)
            verdicts.append(verdict)
            if verdict.accepted:
                return PlanCheckResult(True, flow, fit, predicted, tuple(verdicts), attempt + 1)
    return PlanCheckResult(False, None, None, None, tuple(verdicts), config.max_attempts)


__all__ = [
    "FlowSampler",
    "Observation",
    "PlanCheckConfig",
    "PlanCheckResult",
    "check_plan",
    "fit_object_motion",
    "render_prediction",
]
