"""``jflow eval-kitchen`` in pieces, and the merge of the pieces into one table.

A full table (3 tasks x 5 methods x 20 seeds) is long on a 2-core machine; each piece is one
``evaluate_kitchen`` call on some tasks, methods and a seed range, written to its own folder;
``merge`` joins the pieces' episodes (refusing a task/method/seed that two pieces both ran, and
pieces with other settings), re-computes the summary and writes results.json/results.md::

    python experiments/kitchen_eval.py run --out runs/issue6/oracle_a --tasks open_microwave \
        --methods oracle --episodes 20
    python experiments/kitchen_eval.py merge runs/issue6/oracle_* --out runs/issue6/oracle
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jflow.runtime import configure_rendering

# Settings that may differ between pieces of one table.
PIECE_FIELDS = {"out", "tasks", "methods", "episodes", "first_seed", "progress", "videos"}


def run(args: argparse.Namespace) -> None:
    configure_rendering()
    from jflow.pipeline.evaluation import EvalKitchenConfig, evaluate_kitchen

    config = EvalKitchenConfig(
        out=Path(args.out),
        tasks=tuple(args.tasks),
        methods=tuple(args.methods),
        episodes=args.episodes,
        first_seed=args.first_seed,
        model_run=None if args.model_run is None else Path(args.model_run),
        videos=args.videos,
        plan_check_max_residual=args.max_fit_residual,
    )
    report = evaluate_kitchen(config)
    print((Path(args.out) / "results.md").read_text())
    print(f"{report['timing']['total_seconds']:.0f} s")


def merge(args: argparse.Namespace) -> None:
    from jflow.errors import ConfigError
    from jflow.pipeline.evaluation import EvalKitchenConfig, make_report, write_results

    reports = [json.loads((Path(p) / "results.json").read_text()) for p in args.pieces]
    defaults = EvalKitchenConfig().to_dict()  # settings a piece predates take their defaults

    def settings(rep: dict) -> dict:
        full = {**defaults, **rep["settings"]}
        return {k: v for k, v in full.items() if k not in PIECE_FIELDS}

    base = settings(reports[0])
    rows, seen, tasks, methods, seeds = [], set(), [], [], set()
    for path, rep in zip(args.pieces, reports, strict=True):
        if not rep.get("complete", True):
            raise ConfigError(f"{path} is incomplete (the run was stopped)")
        other = settings(rep)
        if other != base:
            diff = sorted(k for k in base | other if base.get(k) != other.get(k))
            raise ConfigError(f"{path} was run with other settings: {', '.join(diff)}")
        for row in rep["episodes"]:
            key = (row["task_id"], row["method"], row["seed"])
            if key in seen:
                raise ConfigError(f"{path}: episode {key} is in two pieces")
            seen.add(key)
            rows.append(row)
        tasks += [t for t in rep["tasks"] if t not in tasks]
        methods += [m for m in rep["methods"] if m not in methods]
        seeds |= set(rep["seeds"])
    seeds = sorted(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ConfigError(f"the pieces' seeds are not one range: {seeds}")
    config = EvalKitchenConfig(
        **{
            **{k: v for k, v in base.items() if k in EvalKitchenConfig.__dataclass_fields__},
            "out": Path(args.out),
            "tasks": tuple(tasks),
            "methods": tuple(methods),
            "episodes": len(seeds),
            "first_seed": seeds[0],
            "model_run": None if base.get("model_run") is None else Path(base["model_run"]),
        }
    )
    total = sum(r["timing"]["total_seconds"] for r in reports)
    timing = {
        "total_seconds": round(total, 2),
        "setup_seconds": round(sum(r["timing"]["setup_seconds"] for r in reports), 2),
        "median_episode_seconds": sorted(r["seconds"] for r in rows)[len(rows) // 2],
        "machine": reports[0]["timing"]["machine"],
        "pieces": [str(p) for p in args.pieces],
    }
    report = make_report(config, rows, reports[0].get("model"), timing)
    missing = [
        (t, m) for t in tasks for m in methods if report["summary"][t][m]["episodes"] != len(seeds)
    ]
    if missing:
        raise ConfigError(f"the pieces do not cover every seed of {missing}")
    write_results(report, Path(args.out))
    print((Path(args.out) / "results.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--methods", nargs="+", default=["oracle"])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--model-run", default=None)
    p.add_argument("--videos", type=int, default=0)
    p.add_argument("--max-fit-residual", type=float, default=None)
    p.set_defaults(func=run)
    m = sub.add_parser("merge")
    m.add_argument("pieces", nargs="+")
    m.add_argument("--out", required=True)
    m.set_defaults(func=merge)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
