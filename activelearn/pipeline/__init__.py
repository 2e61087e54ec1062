"""The DVC pipeline: the stages (prepare, train, evaluate), the worker that runs
them inside the round's process, and `dvc repro` on a workspace.

Imports `learner`, `workspace`, `data`, `core`.
"""
