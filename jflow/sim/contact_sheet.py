"""Save a contact sheet of kitchen episodes: ``python -m jflow.sim.contact_sheet [OUT.png]``.

Each row is one episode: RGB at the first, middle and last frame with the visible ground-truth
points drawn (green; tracks of the visible points in yellow), then depth and segmentation of the
last frame. Default output: docs/images/sim_contact_sheet.png.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROWS = (
    ("open_microwave", "human", "front"),
    ("open_slide_cabinet", "human", "side"),
    ("move_kettle_to_top_right_burner", "human", "front"),
    ("turn_on_bottom_burner", "human", "side"),
    ("open_hinge_cabinet", "robot", "side"),
)


def _colorize_depth(depth: np.ndarray) -> np.ndarray:
    d = np.clip((depth - 0.8) / 2.7, 0, 1)
    return cv2.applyColorMap((255 * (1 - d)).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]


def _colorize_seg(seg: np.ndarray) -> np.ndarray:
    palette = np.random.default_rng(3).integers(40, 255, (64, 3)).astype(np.uint8)
    palette[0] = 0
    return palette[seg]


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(img)
    cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def render_sheet(resolution: int = 256, frames: int = 12) -> np.ndarray:
    from jflow.sim.episodes import KitchenWorld  # noqa: PLC0415

    rows = []
    with KitchenWorld(resolution) as world:
        for task_id, kind, camera in ROWS:
            ep = world.render_episode(
                task_id, 2, kind=kind, frames=frames, camera=camera, num_points=256
            )
            tracks = np.asarray(ep.clip.flow.tracks)
            vis = np.asarray(ep.clip.flow.visible)
            tiles = []
            for t in (0, frames // 2, frames - 1):
                img = np.ascontiguousarray(ep.clip.video[t].copy())
                for n in np.flatnonzero(vis[t]):
                    past = [
                        tuple(np.round(tracks[s, n]).astype(int)) for s in range(t + 1) if vis[s, n]
                    ]
                    for a, b in zip(past[:-1], past[1:], strict=True):
                        cv2.line(img, a, b, (255, 220, 0), 1, cv2.LINE_AA)
                    cv2.circle(img, tuple(np.round(tracks[t, n]).astype(int)), 1, (0, 255, 0), -1)
                tiles.append(_label(img, f"{kind} {camera} t={t}"))
            tiles.append(_label(_colorize_depth(ep.clip.depth_video[-1]), "depth"))
            seg = _colorize_seg(ep.segmentation[-1])
            if kind == "robot":
                seg[ep.gripper_mask[-1]] = (255, 255, 255)
            tiles.append(_label(seg, "segmentation"))
            row = np.concatenate(tiles, axis=1)
            cv2.putText(
                row,
                f'{task_id}: "{ep.clip.instruction}"',
                (3, resolution - 6),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
            rows.append(row)
    return np.concatenate(rows, axis=0)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "docs/images/sim_contact_sheet.png"
    sheet = render_sheet()
    cv2.imwrite(out, sheet[..., ::-1])
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
