"""Plan verifiers: accept or reject a predicted flow before the robot acts on it.

3DFlowAction (section 4.1) shows GPT-4o the instruction and the rendered end state and asks
whether to predict the flow again. Here that check is an interface, :class:`Verifier`: a callable
from a :class:`PlanProposal` to a :class:`Verdict` (accepted, reason, the numbers it measured).

:class:`RuleVerifier` is the default, offline one. It rejects a flow when

* it holds NaN / inf at visible points, or fewer than 3 visible points at the first and last frame;
* the object does not move rigidly: RMS residual of the trimmed rigid fit first -> last frame
  above ``max_fit_residual``;
* the object leaves the workspace box or goes through the table: more than
  ``max_outside_fraction`` of the visible point positions (all frames) lie outside the box or
  below ``table_height - table_margin``;
* the flow is static: the largest point displacement (first -> last) is below ``min_motion``;
* the motion is implausible for the task: the largest point displacement is above
  ``max_motion``, or outside the range of the first ``task_motion`` entry whose keyword occurs
  in the instruction;
* several flows were sampled and this one disagrees with them: the median distance between its
  final points and the median final points of the other samples exceeds ``max_disagreement``.

:class:`VLMVerifier` asks a vision-language model through a user-supplied function (no network
code here); it fits the same interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from jflow.errors import ConfigError
from jflow.flow.records import ObjectFlow
from jflow.geometry.rigid import RigidFit
from jflow.planning.workspace import Workspace


@dataclasses.dataclass(frozen=True)
class PlanProposal:
    """What a verifier sees: the instruction, the flow (world frame), its rigid fit first ->
    last frame (``None`` when it could not be fitted), the current and the predicted image, and
    the other flows sampled for the same observation."""

    instruction: str
    flow: ObjectFlow
    fit: RigidFit | None = None
    current_image: np.ndarray | None = None
    predicted_image: np.ndarray | None = None
    other_flows: tuple[ObjectFlow, ...] = ()


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A verifier's decision; ``measurements`` holds the numbers behind it (meters, fractions)."""

    accepted: bool
    reason: str
    measurements: dict[str, float] = dataclasses.field(default_factory=dict)


class Verifier(Protocol):
    def __call__(self, proposal: PlanProposal) -> Verdict: ...


DEFAULT_TASK_MOTION: tuple[tuple[str, float, float], ...] = (
    ("open", 0.03, 1.0),
    ("close", 0.03, 1.0),
    ("slide", 0.03, 0.8),
    ("lift", 0.03, 1.0),
    ("move", 0.03, 1.2),
    ("push", 0.02, 0.8),
    ("pour", 0.02, 0.8),
)
"""``(keyword, min, max)``: the range of the largest point displacement (m) for a task."""


@dataclasses.dataclass(frozen=True)
class RuleVerifierConfig:
    max_fit_residual: float = 0.02
    workspace: Workspace = Workspace()
    table_margin: float = 0.02
    max_outside_fraction: float = 0.02
    min_motion: float = 0.01
    max_motion: float = 1.5
    task_motion: tuple[tuple[str, float, float], ...] = DEFAULT_TASK_MOTION
    max_disagreement: float = 0.05

    def __post_init__(self):
        if not 0 <= self.min_motion < self.max_motion:
            raise ConfigError(
                f"need 0 <= min_motion < max_motion, got {self.min_motion}, {self.max_motion}"
            )
        if not 0 <= self.max_outside_fraction < 1:
            raise ConfigError(
                f"max_outside_fraction must be in [0, 1), got {self.max_outside_fraction}"
            )


class RuleVerifier:
    """The default offline verifier (module docs)."""

    def __init__(self, config: RuleVerifierConfig = RuleVerifierConfig()):
        self.config = config

    def __call__(self, proposal: PlanProposal) -> Verdict:
        cfg = self.config
        flow = proposal.flow
        if flow.frame != "world":
            return Verdict(False, f"flow must be in the world frame, got {flow.frame!r}")
        pts = np.asarray(flow.points, np.float64)
        vis = np.asarray(flow.visible, bool)
        if not np.all(np.isfinite(pts[vis])):
            return Verdict(False, "flow contains NaN or inf at visible points")
        both = vis[0] & vis[-1]
        if both.sum() < 3:
            return Verdict(
                False, f"only {int(both.sum())} points visible at the first and last frame (need 3)"
            )
        m: dict[str, float] = {}
        if proposal.fit is None or not bool(np.asarray(proposal.fit.valid)):
            return Verdict(False, "no valid rigid fit between the first and last frame", m)
        m["fit_residual"] = float(np.asarray(proposal.fit.residual))
        if m["fit_residual"] > cfg.max_fit_residual:
            return Verdict(
                False,
                f"object does not move rigidly: fit residual {m['fit_residual']:.4f} m > {cfg.max_fit_residual} m",
                m,
            )
        p = pts[vis]
        lo, hi = np.asarray(cfg.workspace.lower), np.asarray(cfg.workspace.upper)
        below = p[:, 2] < cfg.workspace.table_height - cfg.table_margin
        outside = np.any((p < lo) | (p > hi), axis=1)
        m["below_table_fraction"] = float(below.mean())
        m["outside_workspace_fraction"] = float(outside.mean())
        if m["below_table_fraction"] > cfg.max_outside_fraction:
            return Verdict(
                False,
                f"object goes through the table: {100 * m['below_table_fraction']:.1f}% of point positions below z = {cfg.workspace.table_height - cfg.table_margin:.3f} m",
                m,
            )
        if m["outside_workspace_fraction"] > cfg.max_outside_fraction:
            return Verdict(
                False,
                f"object leaves the workspace: {100 * m['outside_workspace_fraction']:.1f}% of point positions outside the box",
                m,
            )
        motion = float(np.max(np.linalg.norm(pts[-1][both] - pts[0][both], axis=-1)))
        m["motion"] = motion
        if motion < cfg.min_motion:
            return Verdict(
                False,
                f"static flow: the largest point displacement is {motion:.4f} m "
                f"(< {cfg.min_motion} m); nothing to plan",
                m,
            )
        lo_m, hi_m, why = cfg.min_motion, cfg.max_motion, "any task"
        text = proposal.instruction.lower()
        for word, a, b in cfg.task_motion:
            if word in text:
                lo_m, hi_m, why = a, b, f"a task with {word!r}"
                break
        if not lo_m <= motion <= hi_m:
            return Verdict(
                False,
                f"largest displacement {motion:.3f} m is outside [{lo_m}, {hi_m}] m for {why}",
                m,
            )
        others = [o for o in proposal.other_flows if o.points.shape == flow.points.shape]
        if others:
            finals = np.stack([np.asarray(o.points[-1], np.float64) for o in others])
            med = np.median(finals, axis=0)
            m["disagreement"] = float(np.median(np.linalg.norm(pts[-1] - med, axis=-1)))
            if m["disagreement"] > cfg.max_disagreement:
                return Verdict(
                    False,
                    f"flow disagrees with the {len(others)} other samples: median final-point distance {m['disagreement']:.3f} m > {cfg.max_disagreement} m",
                    m,
                )
        return Verdict(
            True, "passed: rigid, inside the workspace, above the table, plausible motion", m
        )


class VLMVerifier:
    """A vision-language verifier (the paper's GPT-4o check) behind the same interface.

    ``ask(prompt, images) -> answer`` is supplied by the user (an API client); the answer is
    accepted when its first word is "yes". ``prefilter`` (default: a :class:`RuleVerifier`)
    runs first so that the model only sees physically possible plans.
    """

    PROMPT = (
        "The robot must: {instruction}. The first image is the current scene, the second the "
        "predicted scene when the task is done. Does the second image show the task completed "
        "correctly? Answer yes or no, then give a short reason."
    )

    def __init__(
        self, ask: Callable[[str, Sequence[np.ndarray]], str], prefilter: Verifier | None = None
    ):
        self.ask = ask
        self.prefilter = RuleVerifier() if prefilter is None else prefilter

    def __call__(self, proposal: PlanProposal) -> Verdict:
        first = self.prefilter(proposal)
        if not first.accepted:
            return first
        if proposal.current_image is None or proposal.predicted_image is None:
            return Verdict(
                False, "VLM verifier needs the current and the predicted image", first.measurements
            )
        answer = self.ask(
            self.PROMPT.format(instruction=proposal.instruction),
            [proposal.current_image, proposal.predicted_image],
        )
        words = answer.strip().lower().split()
        ok = bool(words) and words[0].strip(".,:;!") == "yes"
        return Verdict(ok, f"VLM: {answer.strip()}", first.measurements)


__all__ = [
    "DEFAULT_TASK_MOTION",
    "PlanProposal",
    "RuleVerifier",
    "RuleVerifierConfig",
    "VLMVerifier",
    "Verdict",
    "Verifier",
]
