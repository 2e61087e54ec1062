"""Streaming the unlabeled pool through the model (locally or on Ray) and
choosing the next batch with a strategy.

Imports the layers below it: `strategies`, `learner`, `workspace`, `data`, `core`.
"""
