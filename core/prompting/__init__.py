"""Anatomy-pathology prompting (the third seed system): vocabularies, a negation-aware normaliser
of free report text onto them, and prompts that use only their terms.

:mod:`.vocabulary` loads a modality plugin's term lists; :mod:`.normaliser` maps a report onto
them (negations, laterality, unknown words); :mod:`.prompts` writes the descriptive prompt and
refuses one that strays outside the vocabulary.
"""
