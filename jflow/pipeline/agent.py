"""The closed loop from a view to actions: observe, get flows, plan, execute a chunk, repeat.

:class:`FlowAgent` is a ``plan_fn`` for :func:`jflow.sim.execution.execute_chunks`. Each call
(at the start and after every executed chunk):

1. **observe** the env's current state (:class:`~jflow.pipeline.observation.KitchenObserver`);
2. ask the **method** for flows (``method.flows_for``; world frame);
3. **plan** with :func:`jflow.planning.plan.plan_actions`: plan check (the rule verifier, or
   one that accepts everything for methods without the check), grasps filtered by MJX
   reachability along the flow's motion, SE(3) trajectory optimisation;
4. turn the plan into a :class:`~jflow.sim.execution.PosePlan`: with the hand empty, approach
   (open gripper at the pre-grasp pose, straight approach, close) then carry and release
   (:func:`jflow.sim.grasping.grasp_and_carry`); with the object in the hand (physics contact
   test, :meth:`GraspGeometry.is_grasped`), the carry from the measured hand pose, then release;
5. cut the plan where the arm's reach ends (numerical IK along the path, warm-started from the
   measured joints, with the joint bounds of FrankaKitchen's action interface): the approach
   must be reachable whole; the carry stops at its last reachable pose and releases there.
   When the arm cannot follow all of the chosen grasp's path, the planner is asked again
   without that grasp (up to ``grasp_retries`` times) and the plan that reaches furthest is
   kept.

Grasp proposals: the planner chooses among candidates and checks them with MJX reachability;
the candidates are the task's handle grasp (:func:`jflow.sim.grasping.grasp_spec`: a door
handle from the front, the kettle's handle from the side) turned about the handle's bar and
tilted (70 poses, :meth:`GraspGeometry.grasp_candidates`), scored nominal first. This stands in
for a grasp detector (the paper's AnyGrasp) and reads the handle's pose from the simulator;
``grasps="antipodal"`` uses the planner's own antipodal grasps from the view's depth and object
mask instead.

When no grasp reaches the whole predicted motion, the agent plans the first half of it (the
flow resampled in time over its first half, same ``T``), then the first quarter: the next call
plans the rest from where the object then is.

Every call leaves a :class:`PlanEvent` (what happened and why) in ``agent.events``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import numpy as np

from jflow.errors import ConfigError, JflowError
from jflow.flow.records import ObjectFlow
from jflow.sim.env import KitchenEnv, KitchenState
from jflow.sim.execution import GRIPPER_OPEN, PosePlan
from jflow.sim.kinematics import PandaKinematics, as_pose_matrices

STAGES = ("plan_check", "grasp", "trajectory", "reach", "flow")
"""Where a plan can fail: the plan check rejected every flow, no grasp candidate is reachable
along the motion, the trajectory optimiser refused the flow (static, too few points), the IK
cannot reach the approach, or the method could not produce a flow."""


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Settings of the closed loop (planner settings are the planner's defaults otherwise)."""

    grasps: Literal["handle", "antipodal"] = "handle"
    """Grasp proposals: the task's handle grasp in 70 orientations, or antipodal grasps from
    the view (module docs)."""
    max_attempts: int = 3
    """Plan-check sampler calls for stochastic methods (deterministic ones get 1)."""
    num_keypoints: int = 16
    pre_grasp: float = 0.10
    """Distance (m) of the pre-grasp pose back along the approach axis."""
    retreat: float = 0.08
    """Distance (m) the open gripper backs off after the release."""
    horizons: tuple[float, ...] = (1.0, 0.5, 0.25)
    """Fractions of the predicted motion tried in turn when no grasp reaches all of it."""
    max_fit_residual: float | None = None
    """The plan check's rigidity tolerance (m, RMS of the trimmed rigid fit first -> last frame);
    ``None``: the planner's default (``RuleVerifierConfig.max_fit_residual``, 0.02)."""
    grasp_retries: int = 8
    """Times the planner is asked again without its chosen grasp when the arm cannot follow
    all of that grasp's path (approach and carry)."""

    def __post_init__(self) -> None:
        if self.grasps not in ("handle", "antipodal"):
            raise ConfigError(f"grasps must be 'handle' or 'antipodal', got {self.grasps!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_fit_residual is not None and self.max_fit_residual <= 0:
            raise ConfigError(f"max_fit_residual must be > 0 m, got {self.max_fit_residual}")
        if self.grasp_retries < 0:
            raise ConfigError(f"grasp_retries must be >= 0, got {self.grasp_retries}")
        if not self.horizons or any(not 0 < h <= 1 for h in self.horizons):
            raise ConfigError(f"horizons must be fractions in (0, 1], got {self.horizons}")


@dataclasses.dataclass(frozen=True)
class PlanEvent:
    """One call of the agent: the env step, whether the hand held the object, the outcome
    (``ok``), the failing stage (one of :data:`STAGES`, or ``""``), the planner's reason, the
    fraction of the motion planned, the mean keypoint error (m), the plan's length in
    waypoints (after the reach cut) and the call's wall time (s)."""

    step: int
    grasped: bool
    ok: bool
    stage: str
    reason: str
    horizon: float = 1.0
    keypoint_error: float | None = None
    waypoints: int = 0
    cut: bool = False
    seconds: float = 0.0
    flows: tuple[ObjectFlow, ...] = ()
    """The flows the method gave (kept by the demo for its pictures; empty otherwise)."""


class AcceptAll:
    """A verifier that accepts every flow (methods without the plan check)."""

    def __call__(self, proposal):
        from jflow.planning.verifier import Verdict

        return Verdict(True, "plan check disabled")


def stretch_time(flow: ObjectFlow, fraction: float) -> ObjectFlow:
    """The first ``fraction`` of a flow's motion resampled to its own ``T`` frames (linear in
    time between frames; a point is visible where both neighbouring frames see it)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return flow
    t = int(flow.points.shape[0])
    s = np.linspace(0.0, fraction * (t - 1), t)
    lo = np.floor(s).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (s - lo)[:, None]

    def lerp(a):
        a = np.asarray(a, np.float32)
        wa = w.reshape((t,) + (1,) * (a.ndim - 1))
        return a[lo] * (1 - wa) + a[hi] * wa

    vis = np.asarray(flow.visible, bool)
    return ObjectFlow(
        points=lerp(flow.points),
        visible=vis[lo] & vis[hi],
        tracks=lerp(flow.tracks),
        depth=lerp(flow.depth),
        frame=flow.frame,
    )


def _stage_of(reason: str) -> str:
    if reason.startswith("no flow accepted"):
        return "plan_check"
    if "no reachable grasp" in reason or "no grasp candidates" in reason:
        return "grasp"
    return "trajectory"


class FlowAgent:
    """``plan_fn(state) -> PosePlan | None`` for one episode (module docs).

    Args:
      env: the env being executed.
      task_id, seed: the episode (``env.reset(task_id, seed)``).
      method: the flow source (:mod:`jflow.pipeline.methods`).
      observer: the :class:`KitchenObserver` (its episode is started here).
      config: :class:`AgentConfig`.
      keep_flows: keep each call's flows in its :class:`PlanEvent` (for pictures).
    """

    def __init__(
        self,
        env: KitchenEnv,
        task_id: str,
        seed: int,
        method,
        observer,
        config: AgentConfig = AgentConfig(),
        *,
        kinematics: PandaKinematics | None = None,
        keep_flows: bool = False,
    ):
        from jflow.sim.grasping import GraspGeometry, grasp_spec
        from jflow.sim.tasks import get_task

        self.env = env
        self.task = get_task(task_id)
        self.seed = int(seed)
        self.instruction = self.task.instruction(seed)
        self.method = method
        self.observer = observer
        self.config = config
        self.spec = grasp_spec(task_id)
        self.geometry = GraspGeometry(env)
        self.kinematics = kinematics if kinematics is not None else PandaKinematics()
        self.keep_flows = keep_flows
        self.events: list[PlanEvent] = []
        self.first_observation = None
        self._grasp: np.ndarray | None = None
        observer.start_episode(task_id, seed)
        method.start_episode(env, task_id, seed, observer)

    # ------------------------------------------------------------------ helpers
    def _candidates(self, state: KitchenState, grasped: bool):
        from jflow.planning.grasps import GraspCandidates

        if grasped:
            poses = self.geometry.ee_pose(state.qpos)[None]
        elif self._grasp is not None and self._on_approach_line(state, self._grasp):
            poses = self._grasp[None]
        elif self.config.grasps == "antipodal":
            return None
        else:
            poses = self.geometry.grasp_candidates(state, self.spec)
        n = len(poses)
        return GraspCandidates(
            np.asarray(poses, np.float64),
            np.full(n, GRIPPER_OPEN),
            np.linspace(1.0, 0.5, n) if n > 1 else np.ones(1),
        )

    def _on_approach_line(self, state: KitchenState, grasp: np.ndarray) -> bool:
        """The open hand is on the approach line to ``grasp`` (:func:`on_approach_line`)."""
        from jflow.sim.grasping import on_approach_line

        ee = self.geometry.ee_pose(state.qpos)
        return on_approach_line(ee, float(state.qpos[7:9].sum()), grasp, self.config.pre_grasp)

    def _verifier(self):
        if not self.method.plan_check:
            return AcceptAll()
        if self.config.max_fit_residual is None:
            return None  # the planner's default RuleVerifier
        from jflow.planning.verifier import RuleVerifier, RuleVerifierConfig

        return RuleVerifier(RuleVerifierConfig(max_fit_residual=self.config.max_fit_residual))

    def _plan(self, flows, observation, grasps, fraction: float):
        from jflow.planning.plan import plan_actions
        from jflow.planning.plan_check import PlanCheckConfig
        from jflow.planning.trajectory import TrajectoryConfig

        method = self.method
        attempts = self.config.max_attempts if method.stochastic and method.plan_check else 1
        cache: dict[int, list[ObjectFlow]] = {0: flows}

        def sampler(attempt: int):
            if attempt not in cache:
                cache[attempt] = method.flows_for(observation, self.instruction, self._state)
                self._all_flows.extend(cache[attempt])
            return [stretch_time(f, fraction) for f in cache[attempt]]

        return plan_actions(
            sampler,
            self.instruction,
            observation.plan_observation(),
            grasps,
            trajectory_config=TrajectoryConfig(num_keypoints=self.config.num_keypoints),
            check_config=PlanCheckConfig(max_attempts=attempts),
            verifier=self._verifier(),
            joint_space=False,  # the plan is executed from its end-effector poses
        )

    def _reachable(
        self, state: KitchenState, approach: PosePlan | None, carry: np.ndarray
    ) -> tuple[PosePlan | None, float, str]:
        """The plan cut where the arm's reach ends: ``(plan or None, fraction of the carry
        reached (-1 when the approach is out of reach), reason)``."""
        from jflow.sim.grasping import carry_and_release, concat_plans

        seed = state.qpos[:7]
        if approach is not None:
            poses = as_pose_matrices(approach.ee_poses)
            n, joints = self.kinematics.reachable_prefix(poses, seed)
            if n < len(poses):
                return None, -1.0, f"approach pose {n} of {len(poses)} is out of reach"
            seed = joints[-1]
        n, joints = self.kinematics.reachable_prefix(carry, seed)
        if n == 0 and approach is None:
            return None, -1.0, "the first carry pose is out of reach"
        tail = carry_and_release(
            carry[:n], release=True, retreat=self.config.retreat, grasp=carry[0]
        )
        if n:
            tail_poses = as_pose_matrices(tail.ee_poses)
            m, _ = self.kinematics.reachable_prefix(tail_poses[n:], joints[-1])
            tail = PosePlan(tail_poses[: n + m], np.asarray(tail.gripper)[: n + m])
        reached = n / max(len(carry), 1)
        if approach is None:
            return tail, reached, ""
        return (concat_plans(approach, tail) if n else approach), reached, ""

    # ------------------------------------------------------------------ the plan_fn
    def __call__(self, state: KitchenState) -> PosePlan | None:
        from jflow.sim.grasping import approach_plan

        started = time.perf_counter()
        grasped = self.geometry.is_grasped(state, self.spec)
        if not grasped and state.success:
            return None
        self._state = state
        self._all_flows: list[ObjectFlow] = []
        observation = self.observer.observe(state)
        if self.first_observation is None:
            self.first_observation = observation

        def event(ok, stage, reason, **kw):
            kw.setdefault("flows", tuple(self._all_flows) if self.keep_flows else ())
            self.events.append(
                PlanEvent(
                    step=int(state.step),
                    grasped=grasped,
                    ok=ok,
                    stage=stage,
                    reason=reason,
                    seconds=time.perf_counter() - started,
                    **kw,
                )
            )

        try:
            flows = self.method.flows_for(observation, self.instruction, state)
        except JflowError as err:
            event(False, "flow", str(err))
            return None
        self._all_flows.extend(flows)
        grasps = self._candidates(state, grasped)
        best = None  # (reached fraction, plan, result, horizon, reason)
        for _ in range(self.config.grasp_retries + 1):
            result, fraction = None, 1.0
            for fraction in self.config.horizons:
                result = self._plan(flows, observation, grasps, fraction)
                if result.ok or _stage_of(result.reason) != "grasp":
                    break
            if not result.ok:
                if best is None:
                    event(False, _stage_of(result.reason), result.reason, horizon=fraction)
                    return None
                break
            carry = as_pose_matrices(result.ee_poses)
            grasp = np.asarray(result.grasp_pose, np.float64)
            if grasped:
                tail = carry[1:] if len(carry) > 1 else carry
                plan, reached, why = self._reachable(state, None, tail)
            else:
                start = (
                    self.geometry.ee_pose(state.qpos)
                    if self._on_approach_line(state, grasp)
                    else None
                )
                approach = approach_plan(grasp, pre_grasp=self.config.pre_grasp, start=start)
                plan, reached, why = self._reachable(state, approach, carry[1:])
            if best is None or reached > best[0]:
                best = (reached, plan, result, fraction, why)
            if reached >= 1.0 or grasped or grasps is None or len(grasps) < 2:
                break
            # The arm cannot follow all of this grasp's path: ask again without it.
            keep = ~np.all(np.isclose(grasps.poses, grasp[None], atol=1e-6), axis=(1, 2))
            if keep.all():
                break
            grasps = grasps.take(np.flatnonzero(keep))
        reached, plan, result, fraction, why = best
        kp = float(np.mean(result.keypoint_error))
        if plan is None:
            event(False, "reach", why, horizon=fraction, keypoint_error=kp)
            return None
        if not grasped:
            self._grasp = np.asarray(result.grasp_pose, np.float64)
        event(
            True,
            "",
            result.reason,
            horizon=fraction,
            keypoint_error=kp,
            waypoints=len(plan),
            cut=reached < 1.0,
        )
        return plan


__all__ = ["STAGES", "AcceptAll", "AgentConfig", "FlowAgent", "PlanEvent", "stretch_time"]
