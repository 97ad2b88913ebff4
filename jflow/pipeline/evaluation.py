"""``jflow eval-kitchen``: success rates of the compared methods on Franka Kitchen episodes.

For every task, method and seed (the same fixed seeds for every method, listed in the report):
``env.reset(task, seed)``, then the closed loop of :class:`jflow.pipeline.agent.FlowAgent`
through :func:`jflow.sim.execution.execute_chunks` (re-planning from the new view after each
chunk of ``chunk_len`` waypoints) until the task's success test passes (FrankaKitchen ends an
episode there), the planner gives up, or ``budget`` env steps are spent.

Writes ``results.json`` (settings, seeds, the model, one row per episode with its plan events,
the summary; rewritten after every episode with ``"complete": false`` until the run ends) and
``results.md``: per task x method the successes ``k/n``, the rate and its
Wilson 95% interval (:func:`wilson_interval`), then where the failures happened (the stage of
the last failed plan, or ``execution`` when every plan was made and the task was still not
done).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jflow.errors import ConfigError, OutputError

RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"
DEFAULT_TASKS = ("open_microwave", "open_slide_cabinet", "move_kettle_to_top_left_burner")
Z_95 = 1.959963984540054
"""The standard normal quantile of 0.975."""


@dataclasses.dataclass(frozen=True)
class EvalKitchenConfig:
    """Run episodes of kitchen tasks for each method with fixed seeds; write success rates."""

    out: Path = Path("runs/eval_kitchen")
    """Folder for results.json, results.md (and videos/)."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Task ids (docs/sim.md); every task needs a grasp (not the knobs or the light)."""
    methods: tuple[str, ...] = ("ours", "oracle")
    """ours, no_plan_check, flow_2d, rigid_only, oracle (docs/pipeline.md)."""
    episodes: int = 20
    """Episodes per task and method."""
    first_seed: int = 0
    """Episode seeds are first_seed, first_seed + 1, ... (the same for every method)."""
    model_run: Path | None = None
    """A `jflow train` run folder; needed by ours, no_plan_check, flow_2d and rigid_only."""
    samples: int = 4
    """Flows sampled per plan (the plan check compares them)."""
    sampler_steps: int | None = None
    """Sampler steps (default: the model's)."""
    model_seed: int = 0
    """Seed of the model's sampling keys."""
    chunk_len: int = 16
    """Waypoints executed before re-planning from the new view."""
    budget: int = 600
    """Env steps per episode (0.08 s each)."""
    frames: int | None = None
    """Frames of the oracle's flow (default: the model's, else 16)."""
    resolution: int = 128
    """Image size of the view without a model (with one: the model's dataset resolution)."""
    camera: str = "front"
    """Camera of the view without a model (with one: the model's dataset camera)."""
    grasps: Literal["handle", "antipodal"] = "handle"
    """Grasp proposals (docs/pipeline.md)."""
    baseline_plan_check: bool = False
    """Give flow_2d and rigid_only the plan check too."""
    plan_check_max_residual: float | None = None
    """The plan check's rigidity tolerance in meters (default: the planner's, 0.02)."""
    videos: int = 0
    """Rollout videos (mp4) of the first N episodes of every task and method."""
    video_resolution: int = 256
    progress: bool = True

    def validate(self) -> EvalKitchenConfig:
        from jflow.pipeline.methods import MODEL_METHODS, parse_methods
        from jflow.sim.grasping import grasp_spec
        from jflow.sim.tasks import get_task

        parse_methods(self.methods)
        if not self.tasks:
            raise ConfigError("no tasks given: name at least one with --tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"a task is listed twice in --tasks {' '.join(self.tasks)}")
        for task_id in self.tasks:
            get_task(task_id)  # UnknownNameError listing the known tasks
            try:
                grasp_spec(task_id)
            except ConfigError as err:
                raise ConfigError(
                    f"task {task_id!r} cannot be executed: {err} (the pipeline grasps handles)"
                ) from err
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if self.first_seed < 0:
            raise ConfigError(f"first_seed must be >= 0, got {self.first_seed}")
        needs_model = [m for m in self.methods if m in MODEL_METHODS]
        if needs_model and self.model_run is None:
            raise ConfigError(
                f"method(s) {', '.join(needs_model)} sample flows from a trained model: pass "
                "--model-run RUN (a `jflow train` run folder), or evaluate only --methods oracle"
            )
        if self.samples < 1 or self.chunk_len < 1 or self.budget < 1:
            raise ConfigError("samples, chunk_len and budget must be >= 1")
        if self.frames is not None and self.frames < 2:
            raise ConfigError(f"frames must be >= 2, got {self.frames}")
        if self.plan_check_max_residual is not None and self.plan_check_max_residual <= 0:
            raise ConfigError(
                f"plan_check_max_residual must be > 0 m, got {self.plan_check_max_residual}"
            )
        if self.videos < 0:
            raise ConfigError(f"videos must be >= 0, got {self.videos}")
        return self

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.first_seed, self.first_seed + self.episodes))

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
        }


# --------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default ``z``)::

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    with ``p = successes / trials``; ``(0, 1)`` for no trials. Unlike the normal approximation
    it stays inside [0, 1] and is not empty at 0 or n successes."""
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ConfigError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    n, p = float(trials), successes / trials
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------- one episode


@dataclasses.dataclass
class EpisodeOutcome:
    """One episode: its report row, the rollout and the agent (events, first observation)."""

    row: dict[str, Any]
    rollout: Any
    agent: Any


def failure_stage(success: bool, events) -> str:
    """``""`` on success; else the stage of the last failed plan, or ``execution`` when every
    plan was made (the motion ran and the task was not done)."""
    if success:
        return ""
    failed = [e for e in events if not e.ok]
    return failed[-1].stage if failed else "execution"


def run_episode(
    env,
    observer,
    method,
    task_id: str,
    seed: int,
    *,
    chunk_len: int = 16,
    budget: int = 600,
    agent_config=None,
    kinematics=None,
    keep_flows: bool = False,
) -> EpisodeOutcome:
    """Reset, run the closed loop, and summarise the episode (module docs)."""
    from jflow.pipeline.agent import AgentConfig, FlowAgent
    from jflow.sim.execution import execute_chunks
    from jflow.sim.tasks import get_task

    started = time.perf_counter()
    state = env.reset(task_id, seed)
    agent = FlowAgent(
        env,
        task_id,
        seed,
        method,
        observer,
        agent_config or AgentConfig(),
        kinematics=kinematics,
        keep_flows=keep_flows,
    )
    rollout = execute_chunks(env, state, agent, chunk_len, budget, kinematics=agent.kinematics)
    task = get_task(task_id)
    final = rollout.final_state.qpos[env.kitchen.qpos_indices(task.joints)]
    row = {
        "task_id": task_id,
        "method": method.name,
        "seed": int(seed),
        "instruction": agent.instruction,
        "success": bool(rollout.success),
        "steps": int(rollout.steps),
        "stop_reason": rollout.reason,
        "failure_stage": failure_stage(rollout.success, agent.events),
        "final_goal_distance": float(task.distance(final)),
        "plans": len(agent.events),
        "seconds": round(time.perf_counter() - started, 3),
        "events": [
            {
                "step": e.step,
                "grasped": e.grasped,
                "ok": e.ok,
                "stage": e.stage,
                "reason": e.reason,
                "horizon": e.horizon,
                "keypoint_error_m": e.keypoint_error,
                "waypoints": e.waypoints,
                "cut_by_reach": e.cut,
                "seconds": round(e.seconds, 3),
            }
            for e in agent.events
        ],
    }
    return EpisodeOutcome(row, rollout, agent)


# --------------------------------------------------------------------------- summary + files


def summarize(rows: list[dict], tasks, methods) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary[task][method]``: successes, episodes, rate, Wilson 95% interval, failures by
    stage, median steps of the successes."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        out[task] = {}
        for method in methods:
            sub = [r for r in rows if r["task_id"] == task and r["method"] == method]
            k, n = sum(r["success"] for r in sub), len(sub)
            lo, hi = wilson_interval(k, n)
            stages: dict[str, int] = {}
            for r in sub:
                if not r["success"]:
                    stages[r["failure_stage"]] = stages.get(r["failure_stage"], 0) + 1
            steps = [r["steps"] for r in sub if r["success"]]
            out[task][method] = {
                "successes": int(k),
                "episodes": int(n),
                "rate": k / n if n else None,
                "wilson95": [lo, hi],
                "failures": stages,
                "median_steps_to_success": float(np.median(steps)) if steps else None,
                "seeds": sorted(r["seed"] for r in sub),
            }
    return out


def markdown_table(report: dict) -> str:
    """The Markdown of a report (:func:`evaluate_kitchen`'s)."""
    tasks, methods = report["tasks"], report["methods"]
    summary = report["summary"]
    lines = [
        "# Franka Kitchen: success rates",
        "",
        f"{report['episodes_per_task']} episode(s) per task and method, seeds "
        f"{', '.join(str(s) for s in report['seeds'])} (the same for every method). "
        "Success: FrankaKitchen's own test (object joints within 0.3 of the goal, L2) at some "
        "step. Cells: successes/episodes, rate, Wilson 95% interval.",
        "",
        "| task | " + " | ".join(methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for task in tasks:
        cells = []
        for m in methods:
            s = summary[task][m]
            lo, hi = s["wilson95"]
            rate = "-" if s["rate"] is None else f"{100 * s['rate']:.0f}%"
            cells.append(
                f"{s['successes']}/{s['episodes']} ({rate}, [{100 * lo:.0f}, {100 * hi:.0f}])"
            )
        lines.append(f"| `{task}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Failures by stage",
        "",
        "plan_check: every sampled flow rejected; grasp: no candidate reachable along the "
        "motion; trajectory: the optimiser refused the flow; reach: the arm cannot follow the "
        "approach; flow: the method gave no flow; execution: every plan was made and executed, "
        "the task was not done.",
        "",
        "| task | method | failures |",
        "| --- | --- | --- |",
    ]
    any_failure = False
    for task in tasks:
        for m in methods:
            f = summary[task][m]["failures"]
            if f:
                any_failure = True
                text = ", ".join(f"{k} {v}" for k, v in sorted(f.items()))
                lines.append(f"| `{task}` | {m} | {text} |")
    if not any_failure:
        lines.append("| (none) | | |")
    if report.get("model"):
        model = report["model"]
        lines += [
            "",
            f"Model: `{model['run']}` (step {model['checkpoint_step']}, trained on "
            f"`{model['train_data']}`), {model['samples']} samples per plan, "
            f"{model['steps']} sampler steps.",
        ]
    timing = report.get("timing", {})
    if not report.get("complete", True):
        lines += ["", f"**Incomplete**: {len(report['episodes'])} episodes so far."]
    if timing:
        lines += [
            "",
            f"Wall time {timing['total_seconds']:.0f} s ({timing['setup_seconds']:.0f} s set-up, "
            f"median {timing['median_episode_seconds']:.1f} s per episode) on "
            f"{timing['machine']}.",
        ]
    return "\n".join(lines) + "\n"


def write_results(report: dict, out: Path) -> list[Path]:
    """Write results.json and results.md into ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS_JSON).write_text(json.dumps(report, indent=2) + "\n")
        (out / RESULTS_MARKDOWN).write_text(markdown_table(report))
    except OSError as err:
        raise OutputError(f"cannot write the results to {out}: {err}") from err
    return [out / RESULTS_JSON, out / RESULTS_MARKDOWN]


def make_report(
    config: EvalKitchenConfig,
    rows: list[dict],
    model: dict | None,
    timing: dict,
    complete: bool = True,
) -> dict[str, Any]:
    """The report (results.json's content); ``complete`` is False while episodes remain."""
    return {
        "kind": "jflow.eval_kitchen",
        "complete": complete,
        "settings": config.to_dict(),
        "tasks": list(config.tasks),
        "methods": list(config.methods),
        "seeds": list(config.seeds),
        "episodes_per_task": config.episodes,
        "model": model,
        "summary": summarize(rows, config.tasks, config.methods),
        "timing": timing,
        "episodes": rows,
    }


# --------------------------------------------------------------------------- the job


def evaluate_kitchen(
    config: EvalKitchenConfig, *, predictor=None, on_episode=None
) -> dict[str, Any]:
    """Run every task x method x seed, write the results (module docs) and return the report.

    ``predictor``: an already loaded :class:`jflow.pipeline.predictor.FlowPredictor` (else one
    is loaded from ``config.model_run`` when a method needs it). ``on_episode(outcome)`` is
    called after every episode (the demo keeps pictures from it).
    """
    import os
    import platform

    from tqdm.auto import tqdm

    from jflow.pipeline.agent import AgentConfig
    from jflow.pipeline.methods import MODEL_METHODS, make_method
    from jflow.pipeline.observation import KitchenObserver
    from jflow.sim.env import KitchenEnv
    from jflow.sim.kinematics import PandaKinematics

    config = config.validate()
    started = time.perf_counter()
    if predictor is None and any(m in MODEL_METHODS for m in config.methods):
        from jflow.pipeline.predictor import FlowPredictor

        predictor = FlowPredictor(
            config.model_run,
            samples=config.samples,
            steps=config.sampler_steps,
            seed=config.model_seed,
        )
    if predictor is not None:
        resolution, camera, grid = predictor.resolution, predictor.camera, predictor.grid[0]
        frames = config.frames or predictor.frames
    else:
        resolution, camera, grid = config.resolution, config.camera, 16
        frames = config.frames or 16
    methods = {
        name: make_method(
            name,
            predictor=predictor,
            frames=frames,
            baseline_plan_check=config.baseline_plan_check,
        )
        for name in config.methods
    }
    env = KitchenEnv()
    kinematics = PandaKinematics()
    agent_config = AgentConfig(
        grasps=config.grasps, max_fit_residual=config.plan_check_max_residual
    )
    rows: list[dict] = []
    episode_seconds: list[float] = []
    setup = time.perf_counter() - started
    video_renderer = None
    jobs = [(t, m, s) for t in config.tasks for m in config.methods for s in config.seeds]
    with KitchenObserver(resolution, camera, grid=grid) as observer:
        bar = tqdm(jobs, desc="eval-kitchen", unit="episode", disable=not config.progress)
        try:
            for task_id, name, seed in bar:
                bar.set_postfix_str(f"{name} {task_id} seed {seed}")
                outcome = run_episode(
                    env,
                    observer,
                    methods[name],
                    task_id,
                    seed,
                    chunk_len=config.chunk_len,
                    budget=config.budget,
                    agent_config=agent_config,
                    kinematics=kinematics,
                    keep_flows=on_episode is not None,
                )
                if config.videos and seed < config.first_seed + config.videos:
                    if video_renderer is None:
                        video_renderer = _video_renderer(config.video_resolution)
                    path = config.out / "videos" / f"rollout_{name}_{task_id}_{seed}.mp4"
                    write_rollout_video(outcome.rollout, path, renderer=video_renderer)
                    outcome.row["video"] = str(path.relative_to(config.out))
                if on_episode is not None:
                    on_episode(outcome)
                rows.append(outcome.row)
                episode_seconds.append(outcome.row["seconds"])
                if len(rows) < len(jobs):  # keep what is done if the run is stopped
                    partial = make_report(config, rows, None, {}, complete=False)
                    write_results(partial, config.out)
                done = sum(r["success"] for r in rows)
                bar.set_postfix_str(f"{done}/{len(rows)} succeeded")
        finally:
            bar.close()
            if video_renderer is not None:
                video_renderer.close()
    timing = {
        "total_seconds": round(time.perf_counter() - started, 2),
        "setup_seconds": round(setup, 2),
        "median_episode_seconds": round(float(np.median(episode_seconds)), 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
    }
    model = predictor.describe() if predictor is not None else None
    if model is not None:
        model.pop("config", None)
    report = make_report(config, rows, model, timing)
    write_results(report, config.out)
    return report


def _video_renderer(resolution: int):
    from jflow.sim.model import load_kitchen
    from jflow.sim.rendering import KitchenRenderer

    return KitchenRenderer(load_kitchen(), resolution)


def write_rollout_video(
    rollout, path: Path, *, renderer=None, camera: str = "front", stride: int = 2
) -> Path:
    """An mp4 of a rollout's states (robot shown), every ``stride``-th env step."""
    from jflow.sim import kitchen_constants as kc
    from jflow.sim.rollout_video import render_rollout, write_mp4

    frames = render_rollout(rollout.states, camera=camera, stride=stride, renderer=renderer)
    return write_mp4(frames, path, fps=1.0 / (kc.ENV_DT * stride))


__all__ = [
    "DEFAULT_TASKS",
    "RESULTS_JSON",
    "RESULTS_MARKDOWN",
    "EpisodeOutcome",
    "EvalKitchenConfig",
    "evaluate_kitchen",
    "failure_stage",
    "make_report",
    "markdown_table",
    "run_episode",
    "summarize",
    "wilson_interval",
    "write_results",
    "write_rollout_video",
]
