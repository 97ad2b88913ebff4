"""The functional FrankaKitchen-v1 interface: reset/step on an immutable state."""

import numpy as np
import pytest

from jflow.errors import ConfigError, UnknownNameError
from jflow.sim import kitchen_constants as kc
from jflow.sim.env import KitchenEnv
from jflow.sim.tasks import TASK_IDS


@pytest.fixture(scope="module")
def env():
    return KitchenEnv()


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_reset_is_the_task_start(env, task_id):
    state = env.reset(task_id, seed=1)
    assert state.qpos.shape == (env.model.nq,) and state.step == 0 and not state.success


def test_step_is_pure_and_follows_the_action(env):
    state = env.reset("open_microwave", 0)
    qpos0 = state.qpos.copy()
    action = np.zeros(kc.ROBOT_NQ)
    action[0] = 0.5
    a = env.step(state, action)
    b = env.step(state, action)
    assert np.array_equal(a.qpos, b.qpos)  # pure in (state, action)
    assert np.array_equal(state.qpos, qpos0)  # the input state is untouched
    for _ in range(4):
        a = env.step(a, action)
    assert a.step == 5 and a.time == pytest.approx(5 * kc.ENV_DT)
    assert a.qpos[0] - qpos0[0] > 0.1  # joint 1 moved the commanded way (0.5 * 2 rad/s * 0.4 s)
    assert np.abs(a.qpos[9:] - qpos0[9:]).max() < 0.01  # the kitchen stayed put


def test_bad_inputs(env):
    state = env.reset("open_microwave", 0)
    with pytest.raises(ConfigError):
        env.step(state, np.zeros(7))
    with pytest.raises(UnknownNameError):
        env.reset("open_fridge")
