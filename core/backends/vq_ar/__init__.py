"""The third seed system as a backend: anatomy-pathology prompts, a VQ-GAN codebook, fine-grained
word-patch alignment and a token transformer (``backend: vq-ar`` edges, ``docs/backends.md``)."""
