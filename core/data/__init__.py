"""Paired datasets: manifests, the torch dataset over them, ingestion of folders, and view augmentations.

A manifest is the table a pair graph's edge names; ``paired_dataset`` reads its rows
through the modality plugins into model space; ``ingest`` writes manifests from DICOM
folders; ``augmentations`` are the seeded view operations imaging plugins compose for
the visual invariant.
"""
