"""Files in and out: imaging readers and writers in model space, DICOM, provenance, checkpoints.

Everything that touches a file format lives here: PNG/NIfTI/npy/DICOM reading with
orientation and spacing, synthetic DICOM writing, the synthetic-data markers and their
inspection, and atomic safetensors/JSON checkpoints. Nothing here trains or samples.
"""
