"""The simulated Franka Kitchen world (gymnasium-robotics FrankaKitchen-v1, MuJoCo 3.3.7).

Importing ``jflow.sim`` is cheap: it loads no MuJoCo, OpenGL or JAX. Import the submodules:

* :mod:`jflow.sim.kitchen_constants` - scene/robot names, cameras, segmentation ids (pure Python);
* :mod:`jflow.sim.tasks` - the :class:`~jflow.sim.tasks.Task` registry (``TASKS``, ``get_task``);
* :mod:`jflow.sim.model` - the edited, cached MuJoCo model;
* :mod:`jflow.sim.cameras`, :mod:`jflow.sim.rendering` - intrinsics/poses, RGB/depth/segmentation;
* :mod:`jflow.sim.ground_truth` - surface points, their motion and visibility;
* :mod:`jflow.sim.demos` - human-style object trajectories and scripted robot IK demos;
* :mod:`jflow.sim.episodes` - :class:`~jflow.sim.episodes.KitchenWorld`,
  :func:`~jflow.sim.episodes.render_episode`, :class:`~jflow.sim.episodes.KitchenEpisode`;
* :mod:`jflow.sim.env` - the functional FrankaKitchen-v1 ``reset``/``step`` interface;
* :mod:`jflow.sim.execution`, :mod:`jflow.sim.kinematics`, :mod:`jflow.sim.grasping`,
  :mod:`jflow.sim.oracle`, :mod:`jflow.sim.rollout_video` - executing joint and end-effector
  plans with physics, IK, grasps, the scripted oracle, rollout videos (docs/sim.md, Execution).

Rendering needs an OpenGL backend: set ``MUJOCO_GL=egl`` (or ``osmesa``) before importing MuJoCo
on a headless machine. See docs/sim.md.
"""
