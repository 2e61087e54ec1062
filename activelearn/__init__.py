"""activelearn: active-learning campaigns for image classification."""

__version__ = "0.1.0"
