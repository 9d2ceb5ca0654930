"""Training a plan: the run folder, every stage kind of MedM2G and the machinery they share.

Stages: central alignment (``alignment``), the VAEs (``autoencoding``), the
single-modality LDMs (``latent_diffusion``) and the multi-flow rounds
(``cross_guided``); ``trainer`` runs a plan's stages in order. Shared machinery:
``engine`` (accelerate), ``loop`` (the optimisation loop), ``shards``, ``state``,
``batches``, ``history``, ``ema``, ``latent_cache``, ``layout`` (the run folder) and
``run`` (binding a config, data and plan to a run folder).
"""
