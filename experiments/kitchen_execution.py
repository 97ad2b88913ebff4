"""Success rates of the scripted oracle executed with physics in FrankaKitchen.

For every task and seed: ``KitchenEnv.reset(task, seed)``; the :class:`DemoOracle` plans from
the episode's demonstrated object path (start -> goal as ``reset`` drew them) a grasp, the carry
holding the handle and the release; :func:`execute_chunks` runs it through the env's
joint-velocity actions with contact physics, re-planning after every ``--chunk`` waypoints
(closed loop) or never (``--chunk 0``: open loop, one plan).

Reported per task (the episode runs to the end of the plan, release included, or the budget):

* ``success``: FrankaKitchen's own test passed at some step (the env ends an episode there);
* ``final``: the test still passes in the last state, after the gripper let go, and the final
  L2 distance of the object's joints to the goal (the test's threshold is 0.3);
* steps to the first success, plans made, wall time per episode.

``python experiments/kitchen_execution.py --tasks open_microwave --seeds 20 --chunk 8``
(``--video DIR`` writes one mp4 per task, of seed 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jflow.runtime import configure_rendering

MAIN_TASKS = ("open_microwave", "open_slide_cabinet", "move_kettle_to_top_left_burner")


def run_episode(env, task_id: str, seed: int, chunk: int, budget: int) -> dict:
    from jflow.errors import SimulationError
    from jflow.sim.execution import execute_chunks
    from jflow.sim.oracle import DemoOracle

    start = time.perf_counter()
    state = env.reset(task_id, seed)
    oracle = DemoOracle(env, task_id, seed)
    try:
        rollout = execute_chunks(
            env, state, oracle, chunk if chunk > 0 else 10**6, budget, stop_on_success=False
        )
    except SimulationError as exc:
        return {"seed": seed, "success": False, "final": False, "error": str(exc)}
    first = next((i for i, s in enumerate(rollout.states) if s.success), None)
    idx = env.kitchen.qpos_indices(oracle.task.joints)
    return {
        "seed": seed,
        "success": first is not None,
        "final": bool(rollout.final_state.success),
        "final_distance": oracle.task.distance(rollout.final_state.qpos[idx]),
        "first_success_step": first,
        "steps": rollout.steps,
        "plans": oracle.plans,
        "reason": rollout.reason,
        "failure": oracle.failure,
        "grasp_reach": oracle.reach,
        "tracking_error": rollout.tracking_error,
        "seconds": time.perf_counter() - start,
        "rollout": rollout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(MAIN_TASKS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=8, help="waypoints per chunk; 0: open loop")
    parser.add_argument("--budget", type=int, default=600, help="env steps per episode")
    parser.add_argument("--video", type=Path, default=None, help="folder for one mp4 per task")
    parser.add_argument("--json", type=Path, default=None, help="write per-episode results here")
    args = parser.parse_args()
    if args.video is not None:
        configure_rendering()

    from jflow.sim.env import KitchenEnv

    env = KitchenEnv()
    results = {}
    print(f"chunk={args.chunk or 'open loop'} budget={args.budget} seeds={args.seeds}")
    for task_id in args.tasks:
        episodes = []
        for seed in range(args.seeds):
            ep = run_episode(env, task_id, seed, args.chunk, args.budget)
            rollout = ep.pop("rollout", None)
            if args.video is not None and seed == 0 and rollout is not None:
                from jflow.sim.rollout_video import render_rollout, write_mp4

                frames = render_rollout(rollout.states, camera="front", stride=2)
                write_mp4(frames, args.video / f"{task_id}_seed0.mp4", fps=12.5 / 2)  # real time
            episodes.append(ep)
            if not ep["success"] or not ep["final"]:
                print(f"  {task_id} seed {seed}: {ep}")
        results[task_id] = episodes
        ok = np.array([e["success"] for e in episodes])
        final = np.array([e["final"] for e in episodes])
        secs = np.array([e.get("seconds", np.nan) for e in episodes])
        first = [e["first_success_step"] for e in episodes if e.get("first_success_step")]
        dist = np.array([e.get("final_distance", np.nan) for e in episodes])
        print(
            f"{task_id:34s} success {ok.mean():.0%} ({ok.sum()}/{len(ok)})  final {final.mean():.0%}"
            f"  final distance to goal {np.nanmedian(dist):.3f} (max {np.nanmax(dist):.3f})"
            f"  steps to success {np.mean(first) if first else float('nan'):.0f}"
            f"  {np.nanmean(secs):.1f} s/episode"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
