"""What the first frame can tell about a kitchen clip's motion: references beside the mean flow.

For a training and a held-out dataset (``jflow gen-kitchen`` output), prints the held-out 3D ADE
(cm, mean over episodes) of:

* the mean training flow of the task (the eval-flow baseline);
* the first-frame ridge regression with 1, 2, 3 and 5 principal components
  (:class:`jflow.evaluation.bounds.FirstFrameRidge`): how much a linear reading of the object's
  initial state improves on the task's mean motion;
* a random training clip of the task (:func:`jflow.evaluation.bounds.same_task_sample_ade`):
  the score of a perfect sampler when the first frame tells nothing, near sqrt(2) times the
  mean flow.

``python experiments/flow_bounds.py --train runs/issue4/train --heldout runs/issue4/heldout``
(seconds; no model). docs/training.md quotes the numbers.
"""

from __future__ import annotations

import argparse

import numpy as np

from jflow.evaluation.baselines import MeanFlowBaseline
from jflow.evaluation.bounds import FirstFrameRidge, same_task_sample_ade
from jflow.evaluation.clips import load_eval_clips
from jflow.metrics.flow3d import flow_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--components", type=int, nargs="+", default=[1, 2, 3, 5])
    args = parser.parse_args()

    train, _ = load_eval_clips(args.train)
    held, _ = load_eval_clips(args.heldout)
    mean_flow = MeanFlowBaseline(train)

    def ade(predict) -> float:
        return 100 * float(
            np.mean([flow_errors(predict(c), c.points, c.visible).ade for c in held])
        )

    rows = [("mean training flow of the task", ade(mean_flow.predict))]
    for k in args.components:
        rows.append((f"first-frame ridge, {k} components", ade(FirstFrameRidge(train, k).predict)))
    rows.append(
        (
            "a random training clip of the task (mean)",
            100 * float(np.mean([same_task_sample_ade(c, train) for c in held])),
        )
    )
    print(f"{len(train)} training clips, {len(held)} held-out clips\n")
    print("| reference | held-out ADE (cm) |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value:.2f} |")
    print(f"\nrandom clip / mean flow: {rows[-1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    main()
