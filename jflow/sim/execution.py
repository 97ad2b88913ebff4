"""Executing joint and end-effector plans in the kitchen through FrankaKitchen's action interface.

The only way the robot moves is :meth:`KitchenEnv.step`: 9 normalised joint velocities in
``[-1, 1]`` that the env scales by 2 rad/s (m/s for the fingers), integrates over 0.08 s from the
*measured* joint positions into position-servo targets and clips to the robot's bounds. Such an
interface has no memory, so holding a pose against gravity needs the controller below:

* :class:`JointController` turns a reference ``(q_ref, v_ref)`` into an action with
  ``a = clip((q_ref + v_ref * d / kp + g(q) / kp + i - q) / (2 * 0.08), -1, 1)``: the servo
  target lands on the reference plus feed-forwards from the model (``d / kp``: joint damping over
  servo gain, so the servo pushes through the damping at the reference velocity; ``g / kp``: the
  gravity and Coriolis torque the servo must hold, from MuJoCo's inverse dynamics) plus a clamped
  integral ``i`` of the remaining arm error (loads the model does not know: contacts, a held
  kettle). Each step the env re-integrates from the measured position, so the loop is a
  well-damped position servo (the joints' damping dominates), stable for any reference.
* :func:`follow_joint_trajectory` moves the reference through arm waypoints ``[T, 7]`` (with
  per-waypoint gripper widths ``[T]``) or full targets ``[T, 9]`` at a capped joint speed (several
  env steps per waypoint where the gap is large), settles before every gripper change and at the
  end, and closes or opens the gripper until its width stops changing. It stops early on success.
* :func:`poses_to_joints` turns end-effector poses (world_from_ee of the ``end_effector`` site,
  ``[T, 7]`` wxyz_xyz, ``[T, 4, 4]`` or a batched ``jaxlie.SE3``) into arm joints by IK.
* :func:`execute_chunks` is the closed loop: ``plan_fn(state)`` (the caller's planner: the world
  neither plans nor learns) returns a :class:`JointPlan` or :class:`PosePlan`; the first
  ``chunk_len`` waypoints run, then the planner is asked again from the new observation, until
  the task's success test passes, the planner gives up (``None``) or the step budget is spent.

Units: radians, meters, seconds; gripper commands are opening widths in meters (0 = closed,
0.08 = open; each finger moves half of it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import mujoco
import numpy as np
from jaxtyping import Float

from jflow.errors import ConfigError, ShapeError, SimulationError
from jflow.sim import kitchen_constants as kc
from jflow.sim.env import KitchenEnv, KitchenState
from jflow.sim.kinematics import ARM_NQ, PandaKinematics, as_pose_matrices

GRIPPER_OPEN = 0.08
"""Opening width (m) of the open gripper (each finger at its 0.04 m limit)."""
GRIPPER_CLOSED = 0.0
"""Commanded width of a closing gripper: the fingers squeeze until they meet what they hold."""

_STEP = kc.ENV_ACTION_SCALE * kc.ENV_DT  # joint change (rad or m) of a full action in one step
_LIMIT_SLACK = 0.1
"""Waypoints up to this far (rad) outside the joint limits are clipped to them, farther ones are
errors (``KitchenEnv.reset`` perturbs the home pose, whose joint 2 sits at its limit, by
N(0, 0.05) rad, so a state's own joints can be a little outside)."""


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """Settings of the joint controller and the trajectory follower.

    Attributes:
      max_action: bound on every normalised action component (<= 1).
      integral_gain: fraction of the arm's joint error added to the integral term per step.
      integral_limit: clamp (rad) of the integral term per joint.
      gravity_compensation: add the model's bias torque over the servo gain.
      velocity_feedforward: add the reference velocity times damping over servo gain.
      max_joint_speed: speed (rad/s) of the reference between waypoints (fastest joint).
      tolerance: arm joint error (rad, max over joints) below which a target is reached.
      settle_velocity: joint speed (rad/s) below which the arm counts as at rest.
      max_settle_steps: env steps spent at most settling before a gripper change and at the end.
      gripper_max_steps: env steps spent at most opening or closing the gripper.
      gripper_min_steps: env steps spent at least opening or closing the gripper.
      gripper_still: width change (m) per step below which the gripper has stopped moving.
    """

    max_action: float = 1.0
    integral_gain: float = 0.3
    integral_limit: float = 0.05
    gravity_compensation: bool = True
    velocity_feedforward: bool = True
    max_joint_speed: float = 0.5
    tolerance: float = 0.004
    settle_velocity: float = 0.05
    max_settle_steps: int = 30
    gripper_max_steps: int = 20
    gripper_min_steps: int = 3
    gripper_still: float = 2e-4

    def __post_init__(self) -> None:
        if not 0.0 < self.max_action <= 1.0:
            raise ConfigError(f"max_action must be in (0, 1], got {self.max_action}")
        if self.max_joint_speed <= 0 or self.tolerance <= 0 or self.settle_velocity <= 0:
            raise ConfigError(
                "max_joint_speed, tolerance and settle_velocity must be positive, got "
                f"{self.max_joint_speed}, {self.tolerance}, {self.settle_velocity}"
            )
        if self.integral_gain < 0 or self.integral_limit < 0:
            raise ConfigError("integral_gain and integral_limit must be >= 0")
        if min(self.max_settle_steps, self.gripper_max_steps, self.gripper_min_steps) < 0:
            raise ConfigError("step counts must be >= 0")


class JointController:
    """Joint-target controller on top of FrankaKitchen's normalised joint-velocity actions."""

    def __init__(self, env: KitchenEnv, config: ControllerConfig = ControllerConfig()):
        self.env = env
        self.config = config
        model = env.model
        self._data = mujoco.MjData(model)
        self.kp = model.actuator_gainprm[: kc.ROBOT_NQ, 0].copy()
        self.damping = model.dof_damping[: kc.ROBOT_NQ].copy()
        bounds = np.asarray(kc.ROBOT_POSITION_BOUNDS)
        self.lower = np.maximum(model.jnt_range[: kc.ROBOT_NQ, 0], bounds[:, 0])
        self.upper = np.minimum(model.jnt_range[: kc.ROBOT_NQ, 1], bounds[:, 1])

    def bias(self, qpos: Float[np.ndarray, " nq"]) -> Float[np.ndarray, " 9"]:
        """Gravity torque/force (N m, N) on the robot joints at ``qpos`` (at rest)."""
        m, d = self.env.model, self._data
        d.qpos[:] = qpos
        d.qvel[:] = 0.0
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        out = np.zeros(m.nv)
        mujoco.mj_rne(m, d, 0, out)
        return out[: kc.ROBOT_NQ]

    def action(
        self,
        state: KitchenState,
        q_ref: Float[np.ndarray, " 9"],
        v_ref: Float[np.ndarray, " 9"],
        integral: Float[np.ndarray, " 9"],
    ) -> tuple[Float[np.ndarray, " 9"], Float[np.ndarray, " 9"]]:
        """``(action [9] in [-max_action, max_action], updated integral [9])`` for one env step
        towards the reference ``q_ref`` moving at ``v_ref`` (rad/s; the fingers get no feed-forward
        or integral: a closing gripper squeezes with its servo)."""
        cfg = self.config
        q = state.qpos[: kc.ROBOT_NQ]
        err = q_ref - q
        integral = integral.copy()
        integral[:ARM_NQ] = np.clip(
            integral[:ARM_NQ] + cfg.integral_gain * err[:ARM_NQ],
            -cfg.integral_limit,
            cfg.integral_limit,
        )
        goal = q_ref.copy()
        arm = slice(0, ARM_NQ)
        if cfg.gravity_compensation:
            ref_qpos = state.qpos.copy()
            ref_qpos[arm] = q_ref[arm]
            goal[arm] += self.bias(ref_qpos)[arm] / self.kp[arm]
        if cfg.velocity_feedforward:
            goal[arm] += v_ref[arm] * self.damping[arm] / self.kp[arm]
        goal[arm] += integral[arm]
        action = np.clip((goal - q) / _STEP, -cfg.max_action, cfg.max_action)
        return action, integral


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What an execution did.

    Attributes:
      states: the start state and the state after every env step (``len = steps + 1``).
      actions: ``[steps, 9]`` the normalised actions sent.
      success: the task's success test passed (execution stops there when asked to).
      reached: the last waypoint was reached (arm error below the tolerance) and the follower
        ran to its end (not stopped by success or the step budget).
      tracking_error: largest arm error (rad, max over joints) between the reference and the
        measured joints over the run.
      reason: why it stopped: ``"success"``, ``"done"``, ``"budget"`` or (closed loop)
        ``"no plan"`` (the planner returned ``None``) and ``"plan limit"``.
    """

    states: tuple[KitchenState, ...]
    actions: np.ndarray
    success: bool
    reached: bool
    tracking_error: float
    reason: str

    @property
    def final_state(self) -> KitchenState:
        return self.states[-1]

    @property
    def steps(self) -> int:
        return len(self.actions)


def _check_targets(
    controller: JointController,
    targets: np.ndarray,
    gripper: np.ndarray | None,
    finger_now: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Validated arm waypoints ``[T, 7]`` and per-finger targets ``[T]`` (m); ``finger_now`` is
    the per-finger command in force (kept when ``gripper`` is None)."""
    q = np.asarray(targets, np.float64)
    if q.ndim != 2 or q.shape[1] not in (ARM_NQ, kc.ROBOT_NQ) or len(q) == 0:
        raise ShapeError(
            f"a joint trajectory is [T, 7] arm joints (plus gripper widths [T]) or [T, 9] with the "
            f"finger positions, T >= 1; got shape {q.shape}"
        )
    if not np.all(np.isfinite(q)):
        bad = np.argwhere(~np.isfinite(q))[0]
        raise ShapeError(
            f"joint trajectory has a non-finite value at waypoint {bad[0]}, joint {bad[1]}"
        )
    if q.shape[1] == kc.ROBOT_NQ:
        if gripper is not None:
            raise ConfigError("pass gripper widths only with [T, 7] arm waypoints, not [T, 9]")
        fingers = q[:, 7:9].mean(axis=1)
    elif gripper is None:
        fingers = np.full(len(q), finger_now)
    else:
        g = np.asarray(gripper, np.float64).reshape(-1)
        if g.shape != (len(q),):
            raise ShapeError(f"gripper widths must be [T={len(q)}], got shape {np.shape(gripper)}")
        if not np.all(np.isfinite(g)):
            raise ShapeError("gripper widths contain NaN or inf")
        if np.any(g < -1e-6) or np.any(g > GRIPPER_OPEN + 1e-6):
            raise ConfigError(
                f"gripper widths must lie in [0, {GRIPPER_OPEN}] m, got {g.min()}..{g.max()}"
            )
        fingers = g / 2
    arm = q[:, :ARM_NQ]
    lo, hi = controller.lower[:ARM_NQ], controller.upper[:ARM_NQ]
    outside = (arm < lo - _LIMIT_SLACK) | (arm > hi + _LIMIT_SLACK)
    if np.any(outside):
        t, j = np.argwhere(outside)[0]
        raise ConfigError(
            f"waypoint {t} puts arm joint {j + 1} at {arm[t, j]:.3f} rad, outside its limits "
            f"[{lo[j]:.3f}, {hi[j]:.3f}]"
        )
    return np.clip(arm, lo, hi), np.clip(fingers, 0.0, kc.ROBOT_POSITION_BOUNDS[7][1])


class _Runner:
    """Steps the env under the controller and records states and actions."""

    def __init__(self, env, controller, state, max_steps, stop_on_success):
        self.env, self.ctl, self.state = env, controller, state
        self.states = [state]
        self.actions: list[np.ndarray] = []
        self.integral = np.zeros(kc.ROBOT_NQ)
        self.max_steps = max_steps
        self.stop_on_success = stop_on_success
        self.tracking = 0.0

    @property
    def stopped(self) -> str | None:
        if self.stop_on_success and self.state.success:
            return "success"
        if self.max_steps is not None and len(self.actions) >= self.max_steps:
            return "budget"
        return None

    def step(self, q_ref: np.ndarray, v_ref: np.ndarray) -> None:
        action, self.integral = self.ctl.action(self.state, q_ref, v_ref, self.integral)
        if not np.all(np.isfinite(action)):
            raise SimulationError(f"the controller produced a non-finite action {action}")
        self.state = self.env.step(self.state, action)
        if not np.all(np.isfinite(self.state.qpos)):
            raise SimulationError(f"the simulation diverged at step {self.state.step}")
        self.tracking = max(
            self.tracking, float(np.abs(q_ref[:ARM_NQ] - self.state.qpos[:ARM_NQ]).max())
        )
        self.states.append(self.state)
        self.actions.append(action)

    def arm_error(self, arm: np.ndarray) -> float:
        return float(np.abs(arm - self.state.qpos[:ARM_NQ]).max())

    def settle(self, arm: np.ndarray, finger: float, cfg: ControllerConfig) -> None:
        ref = np.concatenate([arm, [finger, finger]])
        zero = np.zeros(kc.ROBOT_NQ)
        for _ in range(cfg.max_settle_steps):
            at_rest = float(np.abs(self.state.qvel[:ARM_NQ]).max()) < cfg.settle_velocity
            if (self.arm_error(arm) < cfg.tolerance and at_rest) or self.stopped:
                return
            self.step(ref, zero)

    def move_gripper(self, arm: np.ndarray, finger: float, cfg: ControllerConfig) -> None:
        ref = np.concatenate([arm, [finger, finger]])
        zero = np.zeros(kc.ROBOT_NQ)
        for k in range(cfg.gripper_max_steps):
            if self.stopped:
                return
            before = self.state.qpos[7:9].sum()
            self.step(ref, zero)
            moved = abs(self.state.qpos[7:9].sum() - before)
            if k + 1 >= cfg.gripper_min_steps and moved < cfg.gripper_still:
                return


def follow_joint_trajectory(
    env: KitchenEnv,
    state: KitchenState,
    targets: Float[np.ndarray, "T J"],
    gripper: Float[np.ndarray, " T"] | None = None,
    *,
    config: ControllerConfig = ControllerConfig(),
    controller: JointController | None = None,
    initial_gripper: float | None = None,
    settle_at_end: bool = True,
    stop_on_success: bool = True,
    max_steps: int | None = None,
) -> Rollout:
    """Drive the robot through joint waypoints with physics; stop early on success.

    Args:
      env, state: the env and the state to start from (not modified).
      targets: ``[T, 7]`` arm waypoints (rad) with ``gripper`` widths ``[T]`` (m; ``None`` keeps
        the command in force, ``initial_gripper``), or ``[T, 9]`` with both finger positions
        (m, 0..0.04) in columns 7-8.
      config: controller and follower settings (ignored when ``controller`` is given).
      initial_gripper: the gripper width command already in force (default: the measured
        width; pass 0 to keep squeezing what the hand holds); a waypoint whose width differs by
        more than 1 mm first settles the arm, then opens or closes the gripper until its width
        stops changing.
      settle_at_end: hold the last waypoint until the arm is there and at rest.
      stop_on_success: return as soon as the task's success test passes (FrankaKitchen ends an
        episode there).
      max_steps: env step budget (``None``: no limit).

    The reference moves between waypoints at ``config.max_joint_speed`` (fastest joint), so a
    large gap takes several env steps; intermediate waypoints are passed, not waited for.
    Raises ShapeError/ConfigError on a malformed or out-of-limits trajectory and
    SimulationError if the simulation diverges.
    """
    ctl = controller if controller is not None else JointController(env, config)
    cfg = ctl.config
    if max_steps is not None and max_steps < 0:
        raise ConfigError(f"max_steps must be >= 0, got {max_steps}")
    if initial_gripper is not None and not 0.0 <= initial_gripper <= GRIPPER_OPEN:
        raise ConfigError(f"initial_gripper must be a width in [0, {GRIPPER_OPEN}] m")
    finger = float(state.qpos[7:9].mean()) if initial_gripper is None else initial_gripper / 2
    arm_wps, finger_wps = _check_targets(ctl, targets, gripper, finger)
    run = _Runner(env, ctl, state, max_steps, stop_on_success)
    prev_arm = state.qpos[:ARM_NQ].copy()
    max_delta = cfg.max_joint_speed * kc.ENV_DT
    for wp, wp_finger in zip(arm_wps, finger_wps, strict=True):
        if run.stopped:
            break
        if abs(wp_finger - finger) > 5e-4:
            run.settle(prev_arm, finger, cfg)
            finger = float(wp_finger)
            run.move_gripper(prev_arm, finger, cfg)
            if run.stopped:
                break
        n = max(1, int(np.ceil(np.abs(wp - prev_arm).max() / max_delta)))
        velocity = np.zeros(kc.ROBOT_NQ)
        velocity[:ARM_NQ] = (wp - prev_arm) / (n * kc.ENV_DT)
        for k in range(1, n + 1):
            if run.stopped:
                break
            ref = np.concatenate([prev_arm + (wp - prev_arm) * (k / n), [finger, finger]])
            run.step(ref, velocity if k < n else np.zeros(kc.ROBOT_NQ))
        prev_arm = wp
    stopped = run.stopped
    if settle_at_end and stopped is None:
        run.settle(prev_arm, finger, cfg)
        stopped = run.stopped
    reached = stopped is None and run.arm_error(arm_wps[-1]) < cfg.tolerance
    return Rollout(
        states=tuple(run.states),
        actions=np.asarray(run.actions, np.float64).reshape(-1, kc.ROBOT_NQ),
        success=bool(run.state.success),
        reached=bool(reached),
        tracking_error=run.tracking,
        reason=stopped or "done",
    )


# --- plans ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JointPlan:
    """Arm waypoints ``arm [T, 7]`` (rad) and gripper widths ``gripper [T]`` (m)."""

    arm: np.ndarray
    gripper: np.ndarray

    def __len__(self) -> int:
        return len(self.arm)

    def __getitem__(self, index: slice) -> JointPlan:
        return JointPlan(self.arm[index], self.gripper[index])


@dataclasses.dataclass(frozen=True)
class PosePlan:
    """End-effector waypoints ``ee_poses`` (world_from_ee of the ``end_effector`` site:
    ``[T, 7]`` wxyz_xyz, ``[T, 4, 4]`` or a batched ``jaxlie.SE3``) and gripper widths
    ``gripper [T]`` (m)."""

    ee_poses: object
    gripper: np.ndarray

    def __len__(self) -> int:
        return len(as_pose_matrices(self.ee_poses))


def poses_to_joints(
    kinematics: PandaKinematics,
    state: KitchenState,
    ee_poses,
    *,
    position_tolerance: float = 0.005,
    rotation_tolerance: float = 0.05,
) -> Float[np.ndarray, "T 7"]:
    """Arm joints ``[T, 7]`` for end-effector poses (see :class:`PosePlan`), by IK warm-started
    from the state's arm and then from each previous solution. Raises SimulationError naming the
    first pose the arm cannot reach within the tolerances (m, rad)."""
    poses = as_pose_matrices(ee_poses)
    if len(poses) == 0:
        raise ShapeError("no end-effector poses to convert")
    seed = state.qpos[:ARM_NQ].copy()
    out = np.zeros((len(poses), ARM_NQ))
    for t, pose in enumerate(poses):
        result = kinematics.solve(pose, seed)
        if not result.ok(position_tolerance, rotation_tolerance):
            raise SimulationError(
                f"end-effector pose {t} is out of reach: IK leaves {result.position_error * 1000:.1f} "
                f"mm and {np.degrees(result.rotation_error):.1f} deg of error"
            )
        out[t] = seed = result.q
    return out


def plan_to_joints(
    kinematics: PandaKinematics, state: KitchenState, plan: JointPlan | PosePlan
) -> JointPlan:
    """A :class:`JointPlan` (IK for a :class:`PosePlan`), checked for shapes."""
    if isinstance(plan, PosePlan):
        return JointPlan(
            poses_to_joints(kinematics, state, plan.ee_poses), np.asarray(plan.gripper)
        )
    if isinstance(plan, JointPlan):
        return plan
    raise ConfigError(f"a plan is a JointPlan or a PosePlan, got {type(plan).__name__}")


PlanFn = Callable[[KitchenState], "JointPlan | PosePlan | None"]


def execute_chunks(
    env: KitchenEnv,
    state: KitchenState,
    plan_fn: PlanFn,
    chunk_len: int,
    budget: int,
    *,
    config: ControllerConfig = ControllerConfig(),
    kinematics: PandaKinematics | None = None,
    max_plans: int = 100,
    stop_on_success: bool = True,
) -> Rollout:
    """Closed loop: plan from the observation, run the first ``chunk_len`` waypoints, re-plan.

    ``plan_fn(state)`` returns a :class:`JointPlan`, a :class:`PosePlan` (converted by IK) or
    ``None`` (the planner has nothing left to do, or gives up). A plan of at most ``chunk_len``
    waypoints runs to its end and settles. The loop ends on the task's success (unless
    ``stop_on_success=False``: then it runs until the planner returns ``None``), after ``budget``
    env steps, when the planner returns ``None``, or after ``max_plans`` plans. Returns the whole :class:`Rollout` (its ``reason``
    says which).
    """
    if not isinstance(chunk_len, (int, np.integer)) or chunk_len < 1:
        raise ConfigError(f"chunk_len must be a positive integer, got {chunk_len!r}")
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ConfigError(f"budget must be a positive number of env steps, got {budget!r}")
    controller = JointController(env, config)
    kin = kinematics if kinematics is not None else PandaKinematics()
    states, actions = [state], []
    tracking, reason, reached = 0.0, "budget", False
    command = float(state.qpos[7:9].sum())
    for _ in range(max_plans):
        if state.success and stop_on_success:
            reason = "success"
            break
        if len(actions) >= budget:
            reason = "budget"
            break
        plan = plan_fn(state)
        if plan is None or len(plan) == 0:
            reason = "no plan"
            break
        joints = plan_to_joints(kin, state, plan)
        last = len(joints) <= chunk_len
        chunk = joints[:chunk_len]
        part = follow_joint_trajectory(
            env,
            state,
            chunk.arm,
            chunk.gripper,
            controller=controller,
            initial_gripper=command,
            settle_at_end=last,
            stop_on_success=stop_on_success,
            max_steps=budget - len(actions),
        )
        command = float(np.asarray(chunk.gripper)[-1])
        states.extend(part.states[1:])
        actions.extend(part.actions)
        tracking = max(tracking, part.tracking_error)
        state, reached = part.final_state, part.reached
        reason = part.reason
    else:
        reason = "plan limit"
    if state.success and stop_on_success:
        reason = "success"
    return Rollout(
        states=tuple(states),
        actions=np.asarray(actions, np.float64).reshape(-1, kc.ROBOT_NQ),
        success=bool(state.success),
        reached=bool(reached),
        tracking_error=tracking,
        reason=reason,
    )
