"""Evaluation: multi-view accuracy, Token Optimization, latency budgets, prediction, reports."""
