"""Writing the flow evaluation's report: ``eval_flow.json`` (every number, meters),
``eval_flow.md`` (tables in centimeters) and ``eval_flow.png`` (ADE per task,
:mod:`jflow.evaluation.figure`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jflow.errors import OutputError
from jflow.evaluation.config import REPORT_FIGURE, REPORT_JSON, REPORT_MARKDOWN
from jflow.evaluation.figure import write_figure

METHOD_TITLES = {
    "model_raw": "flow model (raw)",
    "model_anchored": "flow model (anchored)",
    "model_sample_mean": "flow model (mean of the samples)",
    "zero_motion": "zero motion",
    "mean_flow": "mean training flow of the task",
    "nearest_neighbour": "nearest training clip",
}


def _cm(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _fraction(d: dict) -> str:
    if not d["total"]:
        return "n/a"
    return f"{100.0 * d['fraction']:.0f}% ({d['correct']}/{d['total']})"


def method_order(report: dict[str, Any]) -> list[str]:
    """The headline model reading first, then the other, then the baselines."""
    headline = report["headline"]
    other = "model_raw" if headline == "model_anchored" else "model_anchored"
    return [headline, other, "model_sample_mean", "zero_motion", "mean_flow", "nearest_neighbour"]


def _shift_note(settings: dict[str, Any]) -> str:
    """`` on a time grid shifted by K`` when the flow sampler's grid is not uniform (reports
    written before the setting existed have none)."""
    shift = settings.get("sample_shift", 1.0)
    return "" if shift == 1.0 else f" on a time grid shifted by {shift:g}"


def format_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: overall, per-task and direction tables, and the definitions."""
    methods = report["methods"]
    order = method_order(report)
    settings = report["settings"]
    n = settings["samples_per_episode"]
    lines = [
        "# Flow model evaluation",
        "",
        f"Run `{report['run']}` (step {report['checkpoint_step']}, model `{report['model']}`, "
        f"objective `{report['objective']}`), held-out data `{report['data']}` "
        f"({report['num_episodes']} episodes), training data `{report['train_data']}`. "
        f"{n} samples per episode, {settings['steps']} `{settings['sampler']}` steps"
        f"{_shift_note(settings)}, guidance scale {settings['guidance_scale']}, seed "
        f"{settings['seed']}.",
        "",
        f"Headline model row: **{METHOD_TITLES[report['headline']]}** ({report['headline_reason']}).",
        "",
    ]
    leaked = report.get("held_out_in_training", [])
    if leaked:
        lines += [
            f"**Warning**: {len(leaked)} held-out episode(s) have the task and seed of a training "
            "episode (the same simulated episode): generate held-out data with another --seed.",
            "",
        ]
    lines += [
        "## Overall (cm; mean over episodes)",
        "",
        "| method | ADE | FDE | direction correct |",
        "| --- | --- | --- | --- |",
    ]
    for m in order:
        s = methods[m]
        name = METHOD_TITLES[m] + (" **(headline)**" if m == report["headline"] else "")
        lines.append(
            f"| {name} | {_cm(s['overall']['ade'])} | {_cm(s['overall']['fde'])} | "
            f"{_fraction(s['direction'])} |"
        )
    best = methods[report["headline"]]["best_of_samples"]
    lines += [
        "",
        f"Best of the {n} samples per episode ({METHOD_TITLES[report['headline']]}): "
        f"ADE {_cm(best['ade'])} cm, FDE {_cm(best['fde'])} cm. The nearest training clip is "
        f"of the episode's own task in {100 * report['nearest_neighbour_same_task']:.0f}% of "
        "episodes.",
        "",
        "## Per task (ADE / FDE, cm)",
        "",
        f"![Held-out ADE per task]({REPORT_FIGURE})",
        "",
        "| task | episodes | " + " | ".join(METHOD_TITLES[m] for m in order) + " |",
        "| --- | --- | " + " | ".join("---" for _ in order) + " |",
    ]
    for task in report["tasks"]:
        cells = [
            f"{_cm(methods[m]['per_task'][task]['ade'])} / {_cm(methods[m]['per_task'][task]['fde'])}"
            for m in order
        ]
        episodes = methods[order[0]]["per_task"][task]["episodes"]
        lines.append(f"| {task} | {episodes} | " + " | ".join(cells) + " |")
    lines += ["", "## Instructed direction (tasks with a forward and a reverse version)", ""]
    direction_tasks = sorted({t for m in order for t in methods[m]["direction"]["per_task"]})
    if direction_tasks:
        lines += [
            "| task | " + " | ".join(METHOD_TITLES[m] for m in order) + " |",
            "| --- | " + " | ".join("---" for _ in order) + " |",
        ]
        for task in direction_tasks:
            cells = [
                _fraction(methods[m]["direction"]["per_task"].get(task, {"total": 0}))
                for m in order
            ]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        excluded = methods[order[0]]["direction"]["excluded_episodes"]
        if excluded:
            lines.append("")
            lines.append(
                f"{excluded} episode(s) of paired tasks left out: their ground-truth mean "
                f"displacement is below {100 * settings['direction_min_motion']:.1f} cm."
            )
    else:
        lines.append("No held-out episode belongs to a task with a reverse version.")
    if report["skipped_episodes"]:
        lines += ["", "## Skipped episodes", ""]
        for s in report["skipped_episodes"]:
            lines.append(f"- episode {s['index']} ({s['task_id']}): {s['reason']}")
    lines += [
        "",
        "## Definitions",
        "",
        "- ADE: mean 3D distance (world frame) between predicted and ground-truth points over "
        "every (frame, point) where the ground truth is visible; FDE: the same on the last frame. "
        "A model row averages its samples' errors.",
        "- Raw: the sampled positions, de-normalised with the training statistics, unprojected "
        "with the clip's intrinsics and moved to the world with its camera pose. Anchored: the "
        "sample's displacements on the known initial points, p_t = p_0 + (q_t - q_0).",
        "- Zero motion: p_t = p_0. Mean flow: the mean camera-frame displacement of each grid "
        "cell over the task's training clips, on the held-out initial points. Nearest clip: "
        "among the training clips whose instruction cosine is within "
        f"{settings['nn_text_tolerance']} of the best, the one with the lowest RMSE of the "
        f"{settings['nn_image_size']}x{settings['nn_image_size']} RGB-D first frame (depth "
        f"clipped at {settings['nn_max_depth']} m); its camera-frame displacements transferred.",
        "- Direction: a prediction is correct when its mean displacement (last minus first "
        "frame, over the points visible in the first frame) has a positive cosine with the "
        "ground truth's.",
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Write ``eval_flow.json``, ``eval_flow.md`` and ``eval_flow.png`` into ``out_dir``
    (created if needed); earlier reports of the same names are replaced."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / REPORT_JSON
        md_path = out / REPORT_MARKDOWN
        json_path.write_text(json.dumps(report, indent=2))
        md_path.write_text(format_markdown(report))
    except OSError as err:
        raise OutputError(f"cannot write the evaluation report to {out}: {err}") from err
    return json_path, md_path, write_figure(report, out / REPORT_FIGURE)


__all__ = ["METHOD_TITLES", "format_markdown", "method_order", "write_report"]
