"""The classifier behind a small protocol (fit, predict, evaluate, save, load) and
its metrics: the one place that trains with TensorFlow.

Imports `core`, `config` and `data`.
"""
