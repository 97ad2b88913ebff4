"""Time kitchen episode generation: ``python -m jflow.sim.benchmark [--tasks N] [--episodes M]``.

Renders M episodes of each of the first N tasks (default: 10 x 6 = 60 episodes, 128x128,
16 frames, front camera, human-style) with one reused :class:`~jflow.sim.episodes.KitchenWorld`
and prints the wall time. Not a test (docs/sim.md records the measured number).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--camera", default="front")
    args = parser.parse_args()

    from jflow.sim.episodes import KitchenWorld  # noqa: PLC0415
    from jflow.sim.tasks import TASK_IDS  # noqa: PLC0415

    # Six distinct objects first: microwave, slide cabinet, hinge cabinet, light, burner, kettle.
    order = [
        "open_microwave",
        "open_slide_cabinet",
        "open_hinge_cabinet",
        "turn_on_light",
        "turn_on_bottom_burner",
        "move_kettle_to_top_left_burner",
    ]
    tasks = (order + [t for t in TASK_IDS if t not in order])[: args.tasks]
    t0 = time.perf_counter()
    world = KitchenWorld(args.resolution)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = 0
    for task_id in tasks:
        for seed in range(args.episodes):
            ep = world.render_episode(task_id, seed, frames=args.frames, camera=args.camera)
            assert ep.success
            n += 1
    render = time.perf_counter() - t1
    world.close()
    print(f"setup (load model + renderer): {setup:.2f} s")
    print(
        f"{n} episodes ({len(tasks)} tasks x {args.episodes}), {args.resolution}x{args.resolution}, "
        f"{args.frames} frames: {render:.1f} s total, {render / n:.2f} s per episode"
    )


if __name__ == "__main__":
    main()
