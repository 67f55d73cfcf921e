"""Training and evaluation loops shared by ``train`` (teacher) and ``distill`` (student)."""

from edgekd.engine.evaluate import evaluate, evaluate_model

__all__ = ["evaluate", "evaluate_model"]
