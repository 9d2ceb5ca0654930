"""Applications built on the library: the ``medm2g`` command line, the demo, the ablation and the baselines.

Nothing in the library imports from here.
"""
