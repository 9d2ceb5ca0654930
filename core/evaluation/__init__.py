"""Scoring generated samples against ground truth: image similarity, report text overlap."""
