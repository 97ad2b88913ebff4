"""A functional FrankaKitchen-v1 interface: ``reset``/``step`` on an immutable :class:`KitchenState`.

In mujoco_playground's style (a pure API over a state record) but on CPU MuJoCo: the full kitchen
cannot be loaded by MJX (cylinder-mesh collisions). The action interface is FrankaKitchen-v1's
(facts from gymnasium_robotics/envs/franka_kitchen/franka_env.py): 9 normalised joint velocities
in ``[-1, 1]``, scaled by ``ENV_ACTION_SCALE`` = 2, integrated from the current robot joint
positions over ``ENV_DT`` = 0.08 s into position-servo targets, clipped to the robot's position
bounds, then ``ENV_FRAME_SKIP`` = 40 physics steps. Observation noise is not simulated.

``step`` is a pure function of ``(state, action)``: the environment's ``MjData`` is scratch space
loaded from the state at every call.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from jflow.errors import ConfigError
from jflow.sim import kitchen_constants as kc
from jflow.sim.demos import randomized_scene_qpos, sample_endpoints
from jflow.sim.model import KitchenModelConfig, home_qpos, load_kitchen
from jflow.sim.tasks import get_task


@dataclasses.dataclass(frozen=True)
class KitchenState:
    """The simulator state plus task bookkeeping (arrays are copies; never mutated)."""

    qpos: np.ndarray
    qvel: np.ndarray
    time: float
    task_id: str
    step: int
    success: bool

    @property
    def robot_qpos(self) -> np.ndarray:
        return self.qpos[: kc.ROBOT_NQ]


class KitchenEnv:
    """Holds the compiled kitchen (a private copy) and scratch ``MjData``."""

    def __init__(self, config: KitchenModelConfig | None = None):
        self.kitchen = load_kitchen(config).copy()
        self.model = self.kitchen.model
        self._data = mujoco.MjData(self.model)
        self._home = home_qpos(self.kitchen)
        self._pos_lo = np.array([b[0] for b in kc.ROBOT_POSITION_BOUNDS])
        self._pos_hi = np.array([b[1] for b in kc.ROBOT_POSITION_BOUNDS])

    def _load(self, state: KitchenState) -> mujoco.MjData:
        d = self._data
        mujoco.mj_resetData(self.model, d)  # no solver warm start carried between calls
        d.qpos[:] = state.qpos
        d.qvel[:] = state.qvel
        d.time = state.time
        d.ctrl[:] = state.qpos[: kc.ROBOT_NQ]
        mujoco.mj_forward(self.model, d)
        return d

    def _success(self, task_id: str, qpos: np.ndarray) -> bool:
        task = get_task(task_id)
        return task.is_success(qpos[self.kitchen.qpos_indices(task.joints)])

    def reset(self, task_id: str, seed: int = 0, *, randomize: bool = True) -> KitchenState:
        """The task's start state (object at its randomised start, robot near home, at rest)."""
        task = get_task(task_id)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
        start, _ = sample_endpoints(self.kitchen, task, rng, randomize)
        qpos = randomized_scene_qpos(self.kitchen, task, self._home, rng, randomize)
        qpos[self.kitchen.qpos_indices(task.joints)] = start
        return KitchenState(
            qpos=qpos.copy(),
            qvel=np.zeros(self.model.nv),
            time=0.0,
            task_id=task_id,
            step=0,
            success=self._success(task_id, qpos),
        )

    def step(self, state: KitchenState, action: np.ndarray) -> KitchenState:
        """Apply one FrankaKitchen-v1 action (9 normalised joint velocities) for 0.08 s."""
        action = np.asarray(action, np.float64)
        if action.shape != (kc.ROBOT_NQ,):
            raise ConfigError(
                f"a kitchen action is {kc.ROBOT_NQ} joint velocities, got shape {action.shape}"
            )
        d = self._load(state)
        velocity = np.clip(action, -1.0, 1.0) * kc.ENV_ACTION_SCALE
        target = state.qpos[: kc.ROBOT_NQ] + velocity * kc.ENV_DT
        d.ctrl[:] = np.clip(target, self._pos_lo, self._pos_hi)
        for _ in range(kc.ENV_FRAME_SKIP):
            mujoco.mj_step(self.model, d)
        qpos = d.qpos.copy()
        return KitchenState(
            qpos=qpos,
            qvel=d.qvel.copy(),
            time=float(d.time),
            task_id=state.task_id,
            step=state.step + 1,
            success=self._success(state.task_id, qpos),
        )
