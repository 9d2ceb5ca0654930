"""How a run trains: the run config, its shipped presets built on the strict YAML structuring of ``medm2g.core.structuring``.

It owns :class:`~medm2g.core.config.run_config.RunConfig` (size, widths, each stage's
settings, model options) and the strict cattrs structuring that turns a YAML file into
typed records with errors naming the file and the field. It composes the settings
records the components below it declare (diffusion, cross-guidance, losses), the settings of the
built-in SynDiff and vq-ar backends (``syndiff.py``, ``vq_ar.py``) and of anatomy-pathology
prompting (``prompting.py``).
"""
