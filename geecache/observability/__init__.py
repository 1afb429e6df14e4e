"""Observability: Prometheus metrics, latency histograms, process CPU sampling and logging.
"""
