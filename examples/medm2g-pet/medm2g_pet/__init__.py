"""Positron emission tomography for medm2g, shipped as its own distribution."""
