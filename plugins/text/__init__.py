"""Radiology report text: the central modality of the paper's alignment star."""
