"""Evaluation: bucketed, jitted sentence embedding and the SentEval STS protocol."""
