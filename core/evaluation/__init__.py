"""Scoring a trained run: every generation task against held-out truth, retrieval, and ``medm2g eval``."""
