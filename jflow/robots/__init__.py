"""Robots the planner drives: today the Franka Emika Panda of the Franka Kitchen scene."""
