"""Magnetic resonance imaging: volumes in arbitrary units, modelled slice-wise."""
