"""Prometheus metrics of a worker: the instruments, consumer lag, and the `/metrics` page."""

from streams.metrics.web import install_metrics

__all__ = ["install_metrics"]
