"""Evaluating the flow world model: ``jflow eval-flow`` (3D ADE/FDE on held-out episodes,
baselines, instructed direction). See docs/training.md, section "Evaluation".

Submodules are imported explicitly (``from jflow.evaluation.flow_eval import evaluate_flow``),
so that ``jflow --help`` imports only the light :mod:`jflow.evaluation.config`.
"""
