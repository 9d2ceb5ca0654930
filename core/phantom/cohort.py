"""Write the phantom cohort: files per subject, ground truth, manifests and an overview picture.

Layout of ``OUT``::

    medm2g.yaml                  the pair graph, its datasets pointing at data/
    data/<pair>.csv              one manifest per pair of the graph, disjoint subjects
    data/test.csv                held-out subjects with every modality (fully paired)
    subjects/<id>/<modality>[_<variant>].<ext>     samples (NIfTI volumes, PNG images, text)
    subjects/<id>/<modality>_lesion.<ext>          lesion masks in each sample's geometry
    subjects/<id>/finding.json                     the ground truth
    overview.png                                   a few subjects, every modality side by side

Subject ``i`` depends only on the seed and ``i`` (its random stream is spawned from the
seed), so a larger cohort extends a smaller one with the same subjects.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import attrs
import numpy as np
import torch

from medm2g.core.errors import DataError
from medm2g.core.graph.pair_graph import PairGraph
from medm2g.core.io.checkpoints import write_atomically
from medm2g.core.io.imaging import slices_to_nifti
from medm2g.core.io.provenance import Provenance
from medm2g.core.phantom.anatomy import PhantomSubject, random_subject
from medm2g.core.progress import progress
from medm2g.core.threads import usable_cores
from medm2g.registry import Modality, ModalityKind, ModalityRegistry

TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
SAMPLE_SUFFIX = {ModalityKind.IMAGE: ".png", ModalityKind.VOLUME: ".nii.gz", ModalityKind.TEXT: ".txt"}


@attrs.frozen
class SubjectRecord:
    """Where one subject's files are, relative to the cohort folder."""

    subject_id: str
    files: dict  # modality -> default sample path
    variants: dict  # modality -> {variant: path}
    masks: dict  # modality -> lesion mask path
    finding: dict
    key_slice: int


@attrs.frozen
class CohortSummary:
    out: Path
    subjects: int
    modalities: tuple[str, ...]
    manifests: dict  # manifest path -> number of records
    seconds: float


def subject_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, index])


def key_slice_of(mask: torch.Tensor) -> int:
    """The slice of a (D, 1, H, W) mask with the most lesion voxels, or the middle slice of a normal subject."""
    if mask.sum() == 0:
        return mask.shape[0] // 2
    return int(mask.flatten(1).sum(1).argmax())


def _write_mask(mask: torch.Tensor, path: Path) -> None:
    array = mask.numpy().astype(np.uint8)
    if path.name.endswith(".png"):
        from PIL import Image

        Image.fromarray(array[0] * 255).save(path)
    else:
        import nibabel

        nibabel.save(slices_to_nifti(array[:, 0]), str(path))


def write_subject(subject: PhantomSubject, index_seed: np.random.SeedSequence, renderers: list[Modality],
                  out: Path) -> SubjectRecord:
    folder = out / "subjects" / subject.subject_id
    folder.mkdir(parents=True, exist_ok=True)
    files, variants, masks, key_slice = {}, {}, {}, None
    noise_seeds = index_seed.spawn(len(renderers))
    # no creation time: the same seed must give byte-identical files
    provenance = Provenance(model="medm2g phantom cohort", source=f"phantom subject {subject.subject_id}",
                            seed=int(index_seed.entropy[0]), created="")
    for modality, noise_seed in zip(renderers, noise_seeds):
        generator = torch.Generator().manual_seed(int(noise_seed.generate_state(1)[0]))
        rendering = modality.phantom_render(subject, generator)
        if rendering is None:
            continue
        suffix = SAMPLE_SUFFIX[modality.spec.kind]
        written = {}
        for number, (variant, sample) in enumerate(rendering.samples.items()):
            name = modality.name if number == 0 else f"{modality.name}_{variant}"
            path = modality.write(sample, folder / f"{name}{suffix}", provenance)
            written[variant] = path.relative_to(out).as_posix()
        files[modality.name] = next(iter(written.values()))
        variants[modality.name] = written
        if rendering.lesion_mask is not None:
            mask_path = folder / f"{modality.name}_lesion{suffix}"
            _write_mask(rendering.lesion_mask, mask_path)
            masks[modality.name] = mask_path.relative_to(out).as_posix()
            if modality.spec.kind is ModalityKind.VOLUME and key_slice is None:
                key_slice = key_slice_of(rendering.lesion_mask)
    finding = attrs.asdict(subject.finding)
    (folder / "finding.json").write_text(json.dumps({"subject_id": subject.subject_id, **finding, "key_slice": key_slice}, indent=2))
    return SubjectRecord(subject.subject_id, files, variants, masks, finding, key_slice or 0)


def assign_groups(n: int, pairs: list[str]) -> tuple[list[int], dict[str, list[int]]]:
    """Every fifth subject is held out for test; the rest go round-robin to the pairs, so no
    training subject is seen in two pairs (text and MRI are never seen together)."""
    step = round(1 / TEST_FRACTION)
    test = [i for i in range(n) if i % step == step - 1]
    rest = [i for i in range(n) if i % step != step - 1]
    groups = {pair: rest[number:: len(pairs)] for number, pair in enumerate(pairs)}
    return test, groups


def write_manifests(out: Path, graph: PairGraph, records: list[SubjectRecord]) -> dict[str, int]:
    """One manifest per pair of the graph (its dataset path) plus ``data/test.csv``. A ``paired: false``
    pair's manifest holds each of its subjects with one of the two modalities only."""
    modalities = sorted({m for r in records for m in r.files})
    # one group of subjects per distinct manifest: two edges naming the same file (one pair trained by
    # two backends) share its subjects; one pair listed twice with two files gets two groups
    names = [f"{edge.label}:{','.join(edge.dataset)}" for edge in graph.pairs]
    test_ids, groups = assign_groups(len(records), list(dict.fromkeys(names)))
    counts: dict[str, int] = {}

    def write(path: Path, rows: list[dict]) -> None:
        columns = ["subject_id", "split", "slice", *modalities]

        def write_rows(temporary: Path) -> None:
            with temporary.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)

        write_atomically(path, write_rows)
        counts[path.relative_to(out).as_posix()] = len(rows)

    def row(record: SubjectRecord, split: str, keep: set[str]) -> dict:
        values = {m: "../" + record.files[m] for m in modalities if m in keep and m in record.files}
        return {"subject_id": record.subject_id, "split": split, "slice": record.key_slice, **values}

    for name, edge in zip(names, graph.pairs):
        members = groups[name]
        validation = set(members[: max(1, int(len(members) * VALIDATION_FRACTION))]) if len(members) > 1 else set()
        # unpaired data: each subject gives one of the two modalities, alternately, so no subject has both
        keep = [{edge.a, edge.b} if edge.paired else {(edge.a, edge.b)[number % 2]} for number in range(len(members))]
        rows = [row(records[i], "val" if i in validation else "train", sides) for i, sides in zip(members, keep)]
        for dataset in edge.dataset:
            write(out / dataset, rows)
    write(out / "data" / "test.csv", [row(records[i], "test", set(modalities)) for i in test_ids])
    return counts


_WORKER_STATE: dict = {}


def _render_one(index: int) -> SubjectRecord:
    seed, renderers, out = _WORKER_STATE["args"]
    sequence = subject_seed(seed, index)
    return write_subject(random_subject(f"S{index:04d}", np.random.default_rng(sequence)), sequence, renderers, out)


def _start_worker() -> None:
    torch.set_num_threads(1)  # one process per core; nested thread pools would only contend


def _render_all(n: int, seed: int, renderers: list[Modality], out: Path, workers: int) -> list[SubjectRecord]:
    """Subjects are independent: render them in ``workers`` forked processes that share the
    template loaded here (copy-on-write), or in this process when ``workers`` is 1."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from medm2g.core.phantom.anatomy import _template_for_sampling

    _template_for_sampling()  # load once, before forking
    _WORKER_STATE["args"] = (seed, renderers, out)
    indices = range(n)
    if workers <= 1 or n < 4 * workers or "fork" not in multiprocessing.get_all_start_methods():
        return [_render_one(i) for i in progress(indices, desc="phantom subjects", unit="subject")]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool:
        results = pool.map(_render_one, indices, chunksize=max(1, n // (8 * workers)))
        return list(progress(results, desc="phantom subjects", unit="subject", total=n))


def generate_cohort(out: Path, n: int, seed: int, registry: ModalityRegistry, graph: PairGraph,
                    overview_subjects: int = 4, workers: int | None = None) -> CohortSummary:
    """Render ``n`` subjects with every modality that renders the phantom, then the manifests.

    The copy of the graph beside the manifests is the cohort's mark of completion: it is removed
    first and written last, so a folder holding it holds every manifest (``prepare_run`` trusts a
    cohort whose graph is there), and a cohort cut short is made again, not used."""
    workers = workers or min(usable_cores(), 8)
    if n < 5:
        raise DataError(f"--n {n}: the cohort needs at least 5 subjects (a test fifth and one per pair)")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    missing = [m for m in graph.modalities if m not in registry]
    if missing:
        raise DataError(f"{graph.source}: modalities {', '.join(missing)} are not installed")
    graph_copy = out / Path(graph.source).name if Path(graph.source).is_file() else None
    if graph_copy is not None and graph_copy.resolve() != Path(graph.source).resolve():
        graph_copy.unlink(missing_ok=True)  # not complete until it is written again, last
    renderers = [registry[m] for m in sorted(graph.modalities)]
    records = _render_all(n, seed, renderers, out, workers)
    rendered = sorted({m for r in records for m in r.files})
    absent = sorted(set(graph.modalities) - set(rendered))
    if absent:
        raise DataError(f"modalities {', '.join(absent)} do not render the phantom (no medm2g_phantom_render)")
    counts = write_manifests(out, graph, records)
    from medm2g.core.phantom.overview import draw_overview

    draw_overview(out, records, registry, out / "overview.png", overview_subjects)
    if graph_copy is not None and graph_copy.resolve() != Path(graph.source).resolve():
        # the graph beside its manifests, so its dataset paths resolve; last: the mark of completion
        write_atomically(graph_copy, lambda temporary: shutil.copyfile(graph.source, temporary))
    return CohortSummary(out, n, tuple(rendered), counts, time.perf_counter() - start)
