"""SynDiff-style adversarial diffusion for unpaired image-to-image translation (issue #8)."""
