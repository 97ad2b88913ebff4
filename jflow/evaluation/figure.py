"""The flow evaluation's picture, ``eval_flow.png``: held-out 3D ADE per task, the model's rows
next to the baselines', so that where the model wins and where it loses shows at a glance.

Zero motion is left out of the bars (its errors are 5 to 10 times the others' and would flatten
them); its overall ADE is in the title. The figure is drawn with matplotlib's Agg canvas
directly (no pyplot, so no global backend state).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from jflow.errors import OutputError

FIGURE_METHODS = ("model_raw", "model_sample_mean", "mean_flow", "nearest_neighbour")
"""The rows drawn, in this order (the anchored model row is left out: it equals the raw row
unless anchoring was asked for, and ``eval_flow.md`` has it)."""

_LABELS = {
    "model_raw": "flow model, one sample",
    "model_sample_mean": "flow model, mean of the samples",
    "mean_flow": "mean training flow of the task",
    "nearest_neighbour": "nearest training clip",
}
_COLOURS = {
    "model_raw": "#1f77b4",
    "model_sample_mean": "#9ecae1",
    "mean_flow": "#ff7f0e",
    "nearest_neighbour": "#7f7f7f",
}


def per_task_ade(
    report: dict[str, Any],
) -> tuple[list[str], list[str], Float[np.ndarray, "rows methods"]]:
    """``(rows, methods, ade_cm)``: the rows are ``"overall"`` then every task of the report,
    the methods those of :data:`FIGURE_METHODS` present in it, and ``ade_cm[i, j]`` the mean
    ADE of method ``j`` on row ``i`` in centimetres (NaN where a method has no value)."""
    methods = [m for m in FIGURE_METHODS if m in report["methods"]]
    rows = ["overall", *report["tasks"]]
    table = np.full((len(rows), len(methods)), np.nan)
    for j, m in enumerate(methods):
        stats = report["methods"][m]
        values = [stats["overall"]["ade"]]
        values += [stats["per_task"].get(task, {}).get("ade") for task in report["tasks"]]
        table[:, j] = [np.nan if v is None else 100.0 * v for v in values]
    return rows, methods, table


def write_figure(report: dict[str, Any], path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Draw :func:`per_task_ade` as grouped horizontal bars into the PNG ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, methods, table = per_task_ade(report)
    height = 1.2 + 0.13 * len(rows) * max(1, len(methods))
    fig = Figure(figsize=(8.0, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bar = 0.8 / max(1, len(methods))
    y = np.arange(len(rows))[::-1].astype(float)  # overall on top
    for j, m in enumerate(methods):
        offsets = y + 0.4 - bar * (j + 0.5)
        ax.barh(
            offsets, np.nan_to_num(table[:, j]), height=bar, color=_COLOURS[m], label=_LABELS[m]
        )
    ax.set_yticks(y, [r.replace("_", " ") for r in rows], fontsize=8)
    ax.set_xlabel("held-out 3D ADE over visible points (cm; lower is better)")
    zero = report["methods"].get("zero_motion", {}).get("overall", {}).get("ade")
    settings = report.get("settings", {})
    title = (
        f"step {report.get('checkpoint_step')}, {settings.get('samples_per_episode')} samples, "
        f"{settings.get('steps')} {settings.get('sampler')} steps"
    )
    if zero is not None:
        title += f"; zero motion (not drawn): {100.0 * zero:.2f} cm overall"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    try:
        fig.savefig(out, format="png")
    except OSError as err:
        raise OutputError(f"cannot write the evaluation figure to {out}: {err}") from err
    return out


__all__ = ["FIGURE_METHODS", "per_task_ade", "write_figure"]
