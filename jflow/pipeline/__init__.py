"""From an image and an instruction to a task done in the simulator (docs/pipeline.md).

The pipeline composes the parts: the view of an env state (:mod:`.observation`), a flow source
(:mod:`.methods`: the trained model through :mod:`.predictor`, its ablations and baselines, or
ground truth), the planner (:func:`jflow.planning.plan.plan_actions`) and the executor
(:func:`jflow.sim.execution.execute_chunks`), in a closed loop (:mod:`.agent`). On top:
``jflow eval-kitchen`` (:mod:`.evaluation`) and ``jflow demo`` (:mod:`.demo`, :mod:`.report`).

Dependency direction: geometry <- flow <- data/models/planning/sim <- pipeline <- cli. Submodules
are imported explicitly; importing this package loads neither JAX nor MuJoCo.
"""
