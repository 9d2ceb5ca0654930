"""The embedded default data: a deterministic phantom cohort.

Core builds one anatomy per subject (tissue fractions from the MNI152 template
nilearn ships, a random deformation and a known finding); every modality plugin
that implements ``medm2g_phantom_render`` renders that same anatomy with its own
physics, so all modalities of a subject agree and generation can be checked
against ground truth.
"""
