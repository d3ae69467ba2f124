"""Evaluation: accuracy on originals vs stored outputs, bytes, baselines, plots, report, gates."""

from nice.evaluate.metrics import GateResult, check_gates, savings_metrics

__all__ = ["GateResult", "check_gates", "savings_metrics"]
