"""Model building blocks shared by all modalities, built from explicit configs.

Plugins choose the configs (their sizes per :class:`~medm2g.registry.ModelSize`);
these modules only know kinds of data (images, text), never a modality by name.
"""
