"""The kitchen task registry: ids, instructions, start/goal states and success tests (no rendering)."""

import numpy as np
import pytest

from jflow.errors import ConfigError, UnknownNameError
from jflow.sim import kitchen_constants as kc
from jflow.sim.tasks import TASK_IDS, TASKS, Task, get_task


def test_import_jflow_sim_is_light():
    import subprocess
    import sys

    code = "import sys, jflow.sim; bad=[m for m in ('mujoco','jax','OpenGL') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_covers_required_tasks():
    required = {
        "open_microwave",
        "close_microwave",
        "open_slide_cabinet",
        "close_slide_cabinet",
        "open_hinge_cabinet",
        "close_hinge_cabinet",
        "turn_on_light",
        "turn_off_light",
        "turn_on_bottom_burner",
        "move_kettle_to_top_left_burner",
    }
    assert required <= set(TASK_IDS)
    assert len(set(TASK_IDS)) == len(TASKS)


def test_unknown_task_lists_known_ids():
    with pytest.raises(UnknownNameError) as info:
        get_task("open_fridge")
    assert "open_microwave" in str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ConfigError)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.task_id)
def test_task_definition(task: Task):
    assert len(task.instructions) >= 3 and len(set(task.instructions)) == len(task.instructions)
    assert task.target_object in kc.SEGMENTATION_IDS
    assert not task.is_success(np.asarray(task.start))
    assert task.is_success(np.asarray(task.goal))
    assert task.instruction(0) in task.instructions
    if task.reverse_of is not None:
        fwd = get_task(task.reverse_of)
        assert fwd.target_object == task.target_object
    if task.env_task is not None:  # uses FrankaKitchen-v1's own joints, goal and threshold
        idx = kc.ENV_OBS_ELEMENT_INDICES[task.env_task]
        assert len(idx) == len(task.goal)
        assert task.goal == kc.ENV_OBS_ELEMENT_GOALS[task.env_task]
        assert task.threshold == kc.BONUS_THRESH


def test_env_qpos_indices_match_task_joints():
    from jflow.sim.model import load_kitchen

    kitchen = load_kitchen()
    for task in TASKS:
        if task.env_task is not None:
            idx = kitchen.qpos_indices(task.joints)
            assert tuple(idx) == kc.ENV_OBS_ELEMENT_INDICES[task.env_task], task.task_id


def test_forward_and_reverse_pairs():
    reverses = [t for t in TASKS if t.reverse_of]
    assert len(reverses) >= 5
    for task in reverses:
        assert get_task(task.reverse_of).goal == task.start


def test_start_spread_widens_only_the_start():
    from jflow.sim.demos import sample_endpoints
    from jflow.sim.model import load_kitchen

    kitchen = load_kitchen()
    task = get_task("move_kettle_to_top_right_burner")

    def draws(spread: float) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(3)
        pairs = [sample_endpoints(kitchen, task, rng, True, spread) for _ in range(200)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    start1, goal1 = draws(1.0)
    start4, goal4 = draws(4.0)
    # The same random stream: the goals are identical, the start offsets exactly 4x as wide.
    np.testing.assert_allclose(goal4, goal1)
    np.testing.assert_allclose(start4[:, :2] - task.start[:2], 4 * (start1[:, :2] - task.start[:2]))
    assert np.ptp(start4[:, 0]) > 0.1  # up to +-6 cm
    # spread 1 is the task's own noise, bit for bit.
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(sample_endpoints(kitchen, task, rng, True)[0], start1[0])
    with pytest.raises(ConfigError, match="start_spread"):
        sample_endpoints(kitchen, task, np.random.default_rng(0), True, -1.0)
