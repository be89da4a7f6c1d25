"""Downstream evaluation: the field's classification metrics (`metrics.compute_metrics`)."""

from neuript_jax.evaluation.metrics import PAPER_METRICS, compute_metrics, paper_metrics

__all__ = ["PAPER_METRICS", "compute_metrics", "paper_metrics"]
