"""Generation backends other than MedM2G's own cross-guided latent diffusion.

A backend trains the stages a pair-graph edge with ``backend: NAME`` plans and answers
generation requests for them; ``syndiff`` (adversarial diffusion for unpaired
image-to-image translation) is the first.
"""
