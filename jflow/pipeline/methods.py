"""The compared methods: where each one gets the object flow the planner follows.

Every method has one interface, ``flows_for(observation, instruction, state) -> list[ObjectFlow]``
(world frame, ``[T, N]`` in the observation's grid order), and a flag ``plan_check``: whether the
planner's closed-loop plan check (fit, render, verify, resample; docs/planning.md) may reject and
resample its flows. The rest of the pipeline (grasps with MJX reachability, SE(3) trajectory
optimisation, execution) is the same for all of them.

=================  =========================================================  ===========
method             flow                                                       plan check
=================  =========================================================  ===========
``ours``           the trained model's sampled 3D flows                       yes
``no_plan_check``  the same flows; the first sample is executed (3DFlowAction
                   Table 5, variant 1)                                        no
``flow_2d``        the same flows with each point's depth frozen at its
                   frame-0 value before lifting: only image-plane motion
                   reaches the optimiser (the Im2Flow2Act* baseline)          no
``rigid_only``     one SE(3) fitted from the first to the last frame,
                   interpolated over T on SE(3) and applied to the frame-0
                   points (as AVDC and RIGVID)                                no
``oracle``         ground truth: the object's points moved along the
                   demonstration's path from the current state to the
                   episode's goal                                             yes
=================  =========================================================  ===========

The baselines run without the plan check, as in the papers (none of them has one); pass
``baseline_plan_check=True`` to :func:`make_method` to give them ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import jax.numpy as jnp
import jaxlie
import numpy as np
from jaxtyping import Float

from jflow.errors import ConfigError, GeometryError, UnknownNameError
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics, project, unproject

METHODS = ("ours", "no_plan_check", "flow_2d", "rigid_only", "oracle")
MODEL_METHODS = ("ours", "no_plan_check", "flow_2d", "rigid_only")
"""Methods that need a trained model (``model_run``)."""


class Method(Protocol):
    """A flow source for the planner (module docs)."""

    name: str
    plan_check: bool
    stochastic: bool
    """Whether asking again gives other flows (worth resampling when the check rejects)."""

    def start_episode(self, env, task_id: str, seed: int, observer) -> None: ...

    def flows_for(self, observation, instruction: str, state) -> list[ObjectFlow]: ...


# --------------------------------------------------------------------------- flow transforms


def _project_world(
    points: np.ndarray, intrinsics: PinholeIntrinsics, camera_pose: jaxlie.SE3
) -> tuple[np.ndarray, np.ndarray]:
    cam = np.asarray(camera_pose.as_matrix(), np.float64)
    local = (np.asarray(points, np.float64) - cam[:3, 3]) @ cam[:3, :3]
    pix, z = project(jnp.asarray(local, jnp.float32), intrinsics)
    return np.asarray(pix, np.float32), np.asarray(z, np.float32)


def depth_frozen_flow(
    flow: ObjectFlow, intrinsics: PinholeIntrinsics, camera_pose: jaxlie.SE3
) -> ObjectFlow:
    """The 2D-flow reading of a flow: each point's pixel track ``tracks [T, N, 2]`` lifted with
    its **frame-0** camera depth, so that only image-plane motion is left (world frame; the
    camera depth of every point is constant over time)."""
    tracks = np.asarray(flow.tracks, np.float32)
    depth0 = np.broadcast_to(np.asarray(flow.depth, np.float32)[:1], tracks.shape[:2])
    cam_points = np.asarray(unproject(jnp.asarray(tracks), jnp.asarray(depth0), intrinsics))
    cam = np.asarray(camera_pose.as_matrix(), np.float64)
    world = cam_points.astype(np.float64) @ cam[:3, :3].T + cam[:3, 3]
    return ObjectFlow(
        points=world.astype(np.float32),
        visible=np.asarray(flow.visible, bool),
        tracks=tracks,
        depth=np.array(depth0, np.float32),
        frame="world",
    )


def interpolate_motion(motion: jaxlie.SE3, frames: int) -> jaxlie.SE3:
    """``[frames]`` poses ``exp(s log(motion))`` for ``s = t / (frames - 1)``: the constant-speed
    screw motion from the identity to ``motion`` (a hinge's arc, a slide's line)."""
    if frames < 2:
        raise ConfigError(f"frames must be >= 2, got {frames}")
    s = jnp.linspace(0.0, 1.0, frames)[:, None]
    return jaxlie.SE3.exp(s * motion.log()[None])


def rigid_only_flow(
    flow: ObjectFlow,
    intrinsics: PinholeIntrinsics,
    camera_pose: jaxlie.SE3,
    trim_fraction: float = 0.2,
) -> ObjectFlow:
    """One rigid motion first -> last frame (the planner's trimmed fit,
    :func:`jflow.planning.plan_check.fit_object_motion`), interpolated over the flow's ``T``
    frames on SE(3) (:func:`interpolate_motion`) and applied to the frame-0 points. Visibility is
    frame 0's at every frame; pixels and depth are re-projected. Raises GeometryError when the
    flow cannot be fitted."""
    from jflow.planning.plan_check import fit_object_motion

    if flow.frame != "world":
        raise ConfigError(f"rigid_only_flow needs a world-frame flow, got {flow.frame!r}")
    fit = fit_object_motion(flow, trim_fraction)
    t = int(flow.points.shape[0])
    poses = interpolate_motion(fit.target_from_source, t)
    p0 = jnp.asarray(flow.points[0], jnp.float32)
    moved = np.asarray(jax_apply(poses, p0), np.float32)  # [T, N, 3]
    tracks, z = _project_world(moved, intrinsics, camera_pose)
    visible = np.repeat(np.asarray(flow.visible[:1], bool), t, axis=0)
    return ObjectFlow(points=moved, visible=visible, tracks=tracks, depth=z, frame="world")


def jax_apply(poses: jaxlie.SE3, points: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "T N 3"]:
    """Points ``[N, 3]`` moved by each of ``[T]`` poses."""
    import jax

    return jax.vmap(lambda p: jax.vmap(p.apply)(points))(poses)


# --------------------------------------------------------------------------- methods


class Oracle:
    """Ground-truth flow: the observed points moved along the demonstration's object path from the
    current state to the goal that ``env.reset`` drew for the episode
    (:func:`jflow.sim.oracle.demo_endpoints`, :func:`jflow.sim.demos.object_trajectory`; a kettle
    is lifted along the rest of the demo's arc)."""

    name = "oracle"
    stochastic = False

    def __init__(self, frames: int = 16, plan_check: bool = True):
        if frames < 2:
            raise ConfigError(f"frames must be >= 2, got {frames}")
        self.frames = int(frames)
        self.plan_check = plan_check
        self._observer = None

    def start_episode(self, env, task_id: str, seed: int, observer) -> None:
        from jflow.sim.oracle import demo_endpoints
        from jflow.sim.tasks import get_task

        self.task = get_task(task_id)
        self.start, self.goal = demo_endpoints(env, task_id, seed)
        self._idx = env.kitchen.qpos_indices(self.task.joints)
        self._observer = observer

    def remaining_lift(self, values: np.ndarray) -> float:
        """Arc height (m) left for a free body at ``values``: the demo's lift less the height
        gained, over the first half of the horizontal way; none after it (0 for joints)."""
        if not self.task.is_free_body:
            return 0.0
        total = float(np.linalg.norm(self.start[:2] - self.goal[:2]))
        left = float(np.linalg.norm(values[:2] - self.goal[:2]))
        if total < 1e-6 or left < 0.5 * total:
            return 0.0
        return max(self.task.lift - max(float(values[2] - self.goal[2]), 0.0), 0.0)

    def flows_for(self, observation, instruction: str, state) -> list[ObjectFlow]:
        from jflow.sim.demos import object_trajectory

        if self._observer is None:
            raise ConfigError("call start_episode before flows_for")
        values = np.asarray(state.qpos, np.float64)[self._idx]
        path = object_trajectory(
            self.task, values, self.goal, self.frames, lift=self.remaining_lift(values)
        )
        return [self._observer.flow_along(observation, path)]


class Ours:
    """The trained model's sampled 3D flows (:class:`jflow.pipeline.predictor.FlowPredictor`).

    The ablations below are subclasses that change only :meth:`transform` (how one sampled
    flow is turned into what the planner sees) and the default of ``plan_check``. Without the
    plan check only the first sample is used: nothing would choose among them.
    """

    name = "ours"
    stochastic = True
    default_plan_check = True

    def __init__(self, predictor, plan_check: bool | None = None):
        self.predictor = predictor
        self.plan_check = self.default_plan_check if plan_check is None else plan_check

    def start_episode(self, env, task_id: str, seed: int, observer) -> None:
        self.predictor.start_episode(task_id, seed)

    def transform(self, flow: ObjectFlow, observation) -> ObjectFlow:
        return flow

    def flows_for(self, observation, instruction: str, state) -> list[ObjectFlow]:
        flows = self.predictor.predict(observation, instruction)
        if not self.plan_check:
            flows = flows[:1]
        return [self.transform(f, observation) for f in flows]


class NoPlanCheck(Ours):
    """The model's flows without the plan check: the first sample is executed."""

    name = "no_plan_check"
    default_plan_check = False


class Flow2D(Ours):
    """The model's flows seen in the image plane only (:func:`depth_frozen_flow`)."""

    name = "flow_2d"
    default_plan_check = False

    def transform(self, flow: ObjectFlow, observation) -> ObjectFlow:
        return depth_frozen_flow(flow, observation.intrinsics, observation.camera_pose)


class RigidOnly(Ours):
    """One rigid motion first -> last frame of the model's flow (:func:`rigid_only_flow`)."""

    name = "rigid_only"
    default_plan_check = False

    def transform(self, flow: ObjectFlow, observation) -> ObjectFlow:
        try:
            return rigid_only_flow(flow, observation.intrinsics, observation.camera_pose)
        except GeometryError:
            return flow  # unfittable: the planner's own fit rejects it with the reason


def make_method(
    name: str,
    *,
    predictor=None,
    frames: int = 16,
    baseline_plan_check: bool = False,
) -> Method:
    """The method called ``name`` (one of :data:`METHODS`). Model methods need ``predictor``."""
    if name not in METHODS:
        raise UnknownNameError("method", name, METHODS)
    if name == "oracle":
        return Oracle(frames)
    if predictor is None:
        raise ConfigError(
            f"method {name!r} samples flows from a trained model: pass its run folder "
            "(--model-run RUN; `jflow train` makes one)"
        )
    if name in ("ours", "no_plan_check"):
        return Ours(predictor) if name == "ours" else NoPlanCheck(predictor)
    cls = {"flow_2d": Flow2D, "rigid_only": RigidOnly}[name]
    return cls(predictor, plan_check=baseline_plan_check)


def parse_methods(names: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of method names (UnknownNameError listing the known ones)."""
    if not names:
        raise ConfigError(f"no method given; known methods: {', '.join(METHODS)}")
    for n in names:
        if n not in METHODS:
            raise UnknownNameError("method", n, METHODS)
    if len(set(names)) != len(names):
        raise ConfigError(f"a method is listed twice: {' '.join(names)}")
    return tuple(names)


__all__ = [
    "METHODS",
    "MODEL_METHODS",
    "Flow2D",
    "Method",
    "NoPlanCheck",
    "Oracle",
    "Ours",
    "RigidOnly",
    "depth_frozen_flow",
    "interpolate_motion",
    "make_method",
    "parse_methods",
    "rigid_only_flow",
]
