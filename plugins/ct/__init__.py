"""Computed tomography: volumes in Hounsfield units, modelled slice-wise."""
