"""Kitchen tasks: instruction phrasings, target object, joint start/goal states, success test.

Every task moves one object's joints from a start state to a goal state. Success is
FrankaKitchen-v1's own test: the L2 distance between the object's qpos values and the goal is
below ``BONUS_THRESH = 0.3`` (for the env's seven tasks the joints and goals are the env's own;
reverse tasks use the same test against the reverse goal).

The registry is the typed tuple :data:`TASKS`; :func:`get_task` looks a task up by id.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jflow.errors import ConfigError, UnknownNameError
from jflow.sim import kitchen_constants as kc


@dataclasses.dataclass(frozen=True)
class Task:
    """One kitchen task.

    Attributes:
      task_id: unique id, e.g. ``"open_microwave"``.
      instructions: natural-language phrasings (>= 3).
      target_object: segmentation object name (``kitchen_constants.SEGMENTATION_OBJECTS``) whose
        surface points make the ground-truth flow.
      joints: the object joints the task moves (a free joint counts 7 qpos values).
      start, goal: qpos values of ``joints`` (flattened) at the start and at the goal.
      start_noise, goal_noise: per-value half-widths of the uniform randomisation of the start
        and of the demonstrated end state (the end state stays within the success threshold).
      threshold: success when ``||qpos[joints] - goal||_2 < threshold``.
      reverse_of: id of the forward task this one undoes, or ``None``.
      grasp_site: model site the gripper holds in scripted robot demos (``None``: no robot demo).
      lift: height (m) of the lifted arc of a free-body (kettle) trajectory.
      env_task: the FrankaKitchen-v1 task name whose joints/goal this task uses, if any.
    """

    task_id: str
    instructions: tuple[str, ...]
    target_object: str
    joints: tuple[str, ...]
    start: tuple[float, ...]
    goal: tuple[float, ...]
    start_noise: tuple[float, ...]
    goal_noise: tuple[float, ...]
    threshold: float = kc.BONUS_THRESH
    reverse_of: str | None = None
    grasp_site: str | None = None
    lift: float = 0.0
    env_task: str | None = None

    def __post_init__(self) -> None:
        n = len(self.start)
        if len(self.instructions) < 3:
            raise ConfigError(f"task {self.task_id!r} needs at least 3 instructions")
        if not (len(self.goal) == len(self.start_noise) == len(self.goal_noise) == n):
            raise ConfigError(f"task {self.task_id!r}: start/goal/noise lengths differ")
        if self.target_object not in kc.SEGMENTATION_IDS:
            raise UnknownNameError("object", self.target_object, kc.SEGMENTATION_OBJECTS)

    @property
    def is_free_body(self) -> bool:
        return self.joints == ("kettle",)

    @property
    def supports_robot_demo(self) -> bool:
        return self.grasp_site is not None

    def distance(self, values: np.ndarray) -> float:
        """L2 distance of the object's qpos values ``[k]`` to the goal."""
        return float(np.linalg.norm(np.asarray(values, np.float64) - np.asarray(self.goal)))

    def is_success(self, values: np.ndarray) -> bool:
        """FrankaKitchen's completion test on the object's qpos values ``[k]``."""
        return self.distance(values) < self.threshold

    def instruction(self, seed: int) -> str:
        """One phrasing, chosen by ``seed``."""
        return self.instructions[int(seed) % len(self.instructions)]


def _pair(
    forward_id: str,
    reverse_id: str,
    forward_instructions: tuple[str, ...],
    reverse_instructions: tuple[str, ...],
    target: str,
    joints: tuple[str, ...],
    closed: tuple[float, ...],
    opened: tuple[float, ...],
    start_noise: tuple[float, ...],
    goal_noise: tuple[float, ...],
    grasp_site: str | None = None,
    env_task: str | None = None,
) -> tuple[Task, Task]:
    forward = Task(
        forward_id,
        forward_instructions,
        target,
        joints,
        closed,
        opened,
        start_noise,
        goal_noise,
        grasp_site=grasp_site,
        env_task=env_task,
    )
    reverse = Task(
        reverse_id,
        reverse_instructions,
        target,
        joints,
        opened,
        closed,
        goal_noise,
        start_noise,
        reverse_of=forward_id,
        grasp_site=grasp_site,
    )
    return forward, reverse


_G = kc.ENV_OBS_ELEMENT_GOALS


def _kettle_goal(burner: str) -> tuple[float, ...]:
    if burner == "top_left":
        return _G["kettle"]  # the env's own goal
    x, y, _ = kc.BURNER_POSITIONS[burner]
    return (x - 0.02, y - 0.01, kc.KETTLE_REST_Z, 1.0, 0.0, 0.0, 0.0)


_KETTLE_NOISE = (0.015, 0.015, 0.0, 0.0, 0.0, 0.0, 0.03)


def _kettle_task(task_id: str, burner: str, start_burner: str, names: tuple[str, ...]) -> Task:
    start = kc.KETTLE_HOME_QPOS if start_burner == "bottom_left" else _kettle_goal(start_burner)
    return Task(
        task_id,
        names,
        "kettle",
        ("kettle",),
        tuple(start),
        _kettle_goal(burner),
        _KETTLE_NOISE,
        _KETTLE_NOISE,
        reverse_of="move_kettle_to_top_left_burner"
        if task_id == "move_kettle_to_bottom_left_burner"
        else None,
        lift=0.12,
        env_task="kettle" if burner == "top_left" else None,
    )


TASKS: tuple[Task, ...] = (
    *_pair(
        "open_microwave",
        "close_microwave",
        (
            "open the microwave",
            "open the microwave door",
            "pull the microwave door open",
            "swing the microwave open",
        ),
        (
            "close the microwave",
            "close the microwave door",
            "push the microwave door shut",
            "shut the microwave",
        ),
        "microwave_door",
        ("microwave",),
        (0.0,),
        _G["microwave"],
        (0.04,),
        (0.05,),
        grasp_site="microhandle_site",
        env_task="microwave",
    ),
    *_pair(
        "open_slide_cabinet",
        "close_slide_cabinet",
        (
            "slide the cabinet door open",
            "open the sliding cabinet",
            "slide the right cabinet door to the right",
            "open the slide cabinet",
        ),
        (
            "slide the cabinet door closed",
            "close the sliding cabinet",
            "slide the right cabinet door back to the left",
            "close the slide cabinet",
        ),
        "slide_door",
        ("slide_cabinet",),
        (0.0,),
        _G["slide cabinet"],
        (0.03,),
        (0.03,),
        grasp_site="slide_site",
        env_task="slide cabinet",
    ),
    *_pair(
        "open_hinge_cabinet",
        "close_hinge_cabinet",
        (
            "open the left hinge cabinet",
            "open the hinged cabinet on the left",
            "swing open the left cabinet's door",
            "open the left cabinet",
        ),
        (
            "close the left hinge cabinet",
            "close the hinged cabinet on the left",
            "swing the left cabinet's door shut",
            "close the left cabinet",
        ),
        "hinge_right_door",
        ("left_hinge_cabinet", "right_hinge_cabinet"),
        (0.0, 0.0),
        _G["hinge cabinet"],
        (0.0, 0.05),
        (0.0, 0.08),
        grasp_site="hinge_site2",
        env_task="hinge cabinet",
    ),
    *_pair(
        "turn_on_light",
        "turn_off_light",
        (
            "turn on the light",
            "flip the light switch on",
            "switch the light on",
            "turn the lamp on",
        ),
        (
            "turn off the light",
            "flip the light switch off",
            "switch the light off",
            "turn the lamp off",
        ),
        "light_switch",
        ("light_switch", "light_joint"),
        (0.0, 0.0),
        _G["light switch"],
        (0.04, 0.0),
        (0.04, 0.0),
        env_task="light switch",
    ),
    *_pair(
        "turn_on_bottom_burner",
        "turn_off_bottom_burner",
        (
            "turn on the bottom burner",
            "turn the bottom left burner knob",
            "switch on the front left burner",
            "rotate the bottom burner's knob on",
        ),
        (
            "turn off the bottom burner",
            "turn the bottom left burner knob back",
            "switch off the front left burner",
            "rotate the bottom burner's knob off",
        ),
        "knob_2",
        ("knob_Joint_2", "bottom_left_burner"),
        (0.0, 0.0),
        _G["bottom burner"],
        (0.05, 0.0),
        (0.08, 0.0),
        env_task="bottom burner",
    ),
    *_pair(
        "turn_on_top_burner",
        "turn_off_top_burner",
        (
            "turn on the top burner",
            "turn the top left burner knob",
            "switch on the back left burner",
            "rotate the top burner's knob on",
        ),
        (
            "turn off the top burner",
            "turn the top left burner knob back",
            "switch off the back left burner",
            "rotate the top burner's knob off",
        ),
        "knob_4",
        ("knob_Joint_4", "top_left_burner"),
        (0.0, 0.0),
        _G["top burner"],
        (0.05, 0.0),
        (0.08, 0.0),
        env_task="top burner",
    ),
    _kettle_task(
        "move_kettle_to_top_left_burner",
        "top_left",
        "bottom_left",
        (
            "move the kettle to the top left burner",
            "put the kettle on the back left burner",
            "slide the kettle onto the top left burner",
            "place the kettle on the top left stove burner",
        ),
    ),
    _kettle_task(
        "move_kettle_to_bottom_left_burner",
        "bottom_left",
        "top_left",
        (
            "move the kettle to the bottom left burner",
            "put the kettle on the front left burner",
            "bring the kettle back to the bottom left burner",
            "place the kettle on the bottom left stove burner",
        ),
    ),
    _kettle_task(
        "move_kettle_to_top_right_burner",
        "top_right",
        "bottom_left",
        (
            "move the kettle to the top right burner",
            "put the kettle on the back right burner",
            "place the kettle on the top right stove burner",
        ),
    ),
    _kettle_task(
        "move_kettle_to_bottom_right_burner",
        "bottom_right",
        "bottom_left",
        (
            "move the kettle to the bottom right burner",
            "put the kettle on the front right burner",
            "place the kettle on the bottom right stove burner",
        ),
    ),
)
"""Every registered task."""

TASKS_BY_ID: dict[str, Task] = {task.task_id: task for task in TASKS}
TASK_IDS: tuple[str, ...] = tuple(TASKS_BY_ID)


def get_task(task_id: str) -> Task:
    """The task named ``task_id``; raises :class:`~jflow.errors.UnknownNameError` listing ids."""
    try:
        return TASKS_BY_ID[task_id]
    except KeyError:
        raise UnknownNameError("task", task_id, TASK_IDS) from None
