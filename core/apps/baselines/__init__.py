"""Reference models trained at the same budget as medm2g, so its numbers mean something."""
