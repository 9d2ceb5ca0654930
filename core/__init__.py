"""Modality-agnostic machinery of medm2g, one sub-package per job.

Nothing here knows a modality by name; what a modality must supply is declared in
:mod:`medm2g.registry` and supplied by the plugins in :mod:`medm2g.plugins`. Imports
run one way, from the applications down to the errors (``docs/architecture.md``
lists the layers; ``tests/test_import_layers.py`` holds the code to them):

``apps`` > ``evaluation`` > ``backends`` > ``generation`` > ``training`` > ``phantom`` >
``metrics`` > ``data`` > ``io`` > ``graph`` > ``config`` > ``diffusion`` > ``models`` >
``registry`` > ``errors``, ``progress``.
"""
