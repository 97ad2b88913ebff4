"""The demo's report folder: flow pictures and an index page.

* :func:`draw_flow_comparison`: the first view of an episode, enlarged, with the object's points
  visible in it and their tracks over the ``T`` frames: ground truth in green, the model's first
  sample in red (start dots in white, end points as circles), a legend, and the 3D errors of the
  sample against the ground truth (mean over points and frames, and at the last frame).
* :func:`write_index`: ``README.md`` linking the table, the pictures and the videos.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from jaxtyping import UInt8

from jflow.errors import OutputError, ShapeError
from jflow.flow.records import ObjectFlow

GREEN = (40, 200, 40)
RED = (230, 40, 40)
WHITE = (255, 255, 255)


def flow_errors_cm(predicted: ObjectFlow, truth: ObjectFlow) -> tuple[float, float]:
    """``(mean 3D distance over frames and points, mean at the last frame)`` in cm, over the
    points the ground truth sees at frame 0."""
    p, g = np.asarray(predicted.points, np.float64), np.asarray(truth.points, np.float64)
    if p.shape != g.shape:
        raise ShapeError(f"predicted flow {p.shape} and ground truth {g.shape} differ in shape")
    vis = np.asarray(truth.visible[0], bool)
    if not vis.any():
        return float("nan"), float("nan")
    d = np.linalg.norm(p[:, vis] - g[:, vis], axis=-1)
    return 100 * float(d.mean()), 100 * float(d[-1].mean())


def draw_flow_comparison(
    rgb: UInt8[np.ndarray, "H W 3"],
    predicted: ObjectFlow,
    truth: ObjectFlow,
    *,
    size: int = 384,
    max_points: int = 40,
    caption: str = "",
) -> UInt8[np.ndarray, "S S2 3"]:
    """The view with predicted (red) and ground-truth (green) tracks and a legend (module docs).
    Both flows hold the same points in the same order (the observation's grid order)."""
    rgb = np.asarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ShapeError(f"rgb must be [H, W, 3] uint8, got {rgb.shape}")
    pt, gt = np.asarray(predicted.tracks, np.float64), np.asarray(truth.tracks, np.float64)
    if pt.shape != gt.shape:
        raise ShapeError(f"predicted tracks {pt.shape} and ground truth {gt.shape} differ")
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    image = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    image = np.ascontiguousarray(image)
    vis = np.flatnonzero(np.asarray(truth.visible[0], bool))
    if len(vis) > max_points:
        vis = vis[np.linspace(0, len(vis) - 1, max_points).round().astype(int)]

    def px(p):
        return (int(round(p[0] * scale)), int(round(p[1] * scale)))

    for tracks, colour in ((gt, GREEN), (pt, RED)):
        for n in vis:
            path = tracks[:, n]
            if not np.all(np.isfinite(path)):
                continue
            pts = np.array([px(p) for p in path], np.int32)
            cv2.polylines(image, [pts], False, colour, 1, cv2.LINE_AA)
            cv2.circle(image, tuple(pts[-1]), 3, colour, 1, cv2.LINE_AA)
    for n in vis:
        if np.all(np.isfinite(gt[0, n])):
            cv2.circle(image, px(gt[0, n]), 2, WHITE, -1, cv2.LINE_AA)
    # Legend and caption on a dark band below the image.
    band = np.full((64, image.shape[1], 3), 30, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.line(band, (8, 14), (38, 14), GREEN, 2)
    cv2.putText(band, "ground truth", (44, 19), font, 0.45, WHITE, 1, cv2.LINE_AA)
    cv2.line(band, (160, 14), (190, 14), RED, 2)
    cv2.putText(band, "predicted (sample 1)", (196, 19), font, 0.45, WHITE, 1, cv2.LINE_AA)
    ade, fde = flow_errors_cm(predicted, truth)
    cv2.putText(
        band,
        f"3D error: mean {ade:.1f} cm, last frame {fde:.1f} cm; dots: start, circles: end",
        (8, 38),
        font,
        0.4,
        WHITE,
        1,
        cv2.LINE_AA,
    )
    if caption:
        cv2.putText(band, caption[:70], (8, 56), font, 0.4, WHITE, 1, cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


def write_png(image: np.ndarray, path: Path) -> Path:
    """Write an RGB image as PNG."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(path), np.asarray(image, np.uint8)[..., ::-1])
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err}") from err
    if not ok:
        raise OutputError(f"OpenCV could not write {path}")
    return path


def write_index(
    out: Path,
    results_markdown: str,
    pictures: dict[str, str],
    videos: dict[str, str],
    notes: list[str],
) -> Path:
    """``README.md`` of the report folder: notes (what ran, timings), the table, the pictures
    (``task -> file``) and the videos (``label -> file``)."""
    lines = ["# jflow demo report", ""]
    lines += [f"- {n}" for n in notes]
    table = results_markdown.split("\n", 2)[2] if results_markdown.startswith("#") else ""
    lines += ["", "## Success rates ([results.md](results.md), [results.json](results.json))", ""]
    lines += [table.strip(), ""]
    lines += ["## Predicted against ground-truth flow", ""]
    for task, name in pictures.items():
        lines += [f"`{task}` ({name}):", "", f"![{task}]({name})", ""]
    lines += ["## Rollout videos", ""]
    lines += [f"- [{label}]({name})" for label, name in videos.items()]
    path = out / "README.md"
    try:
        path.write_text("\n".join(lines) + "\n")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err}") from err
    return path


__all__ = ["draw_flow_comparison", "flow_errors_cm", "write_index", "write_png"]
