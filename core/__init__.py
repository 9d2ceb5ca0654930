"""Modality-agnostic machinery of medm2g: pair graphs, the graph engine, losses,
diffusion and cross-guidance, training and sampling.

Nothing here knows a modality by name; what a modality must supply is declared in
:mod:`medm2g.registry` and supplied by the plugins in :mod:`medm2g.plugins`.
"""
