"""The built-in modalities. Each sub-package is one plugin, registered through the
``medm2g`` entry-point group exactly as a third-party plugin is."""
