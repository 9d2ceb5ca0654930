"""The ``medm2g`` command line.

Every :class:`~medm2g.core.errors.MedM2GError` becomes one line on stderr and exit
status 1; argument mistakes exit 2 (argparse's convention). A traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from medm2g.core.errors import ConfigError, MedM2GError
from medm2g.core.graph.shipped import resolve_graph_path

logger = logging.getLogger("medm2g")


def _command_modalities(args: argparse.Namespace) -> int:
    from medm2g.registry import load_modalities

    registry = load_modalities()
    if args.json:
        import cattrs

        records = [
            {"name": m.name, "provided_by": str(m.source), "spec": cattrs.unstructure(m.spec)} for m in registry.values()
        ]
        print(json.dumps(records, indent=2))
        return 0
    for modality in registry.values():
        spec = modality.spec
        print(f"{spec.name}  ({spec.kind.value})  provided by {modality.source}")
        print(f"    {spec.description}")
        if spec.kind.is_imaging:
            window = f"{spec.intensity.window[0]:g}..{spec.intensity.window[1]:g}"
            scale = "per-sample percentiles" if spec.intensity.per_sample else spec.intensity.unit
            print(f"    grid {spec.channels}x{spec.image_size[0]}x{spec.image_size[1]} -> latent "
                  f"{'x'.join(map(str, spec.latent_shape))}; intensity {window} ({scale}) -> [-1, 1]")
        else:
            print(f"    latent {'x'.join(map(str, spec.latent_shape))}")
        print(f"    files: {', '.join(spec.file_suffixes)}")
    return 0


def _command_plan(args: argparse.Namespace) -> int:
    from medm2g.core.graph.engine import build_plan
    from medm2g.core.graph.pair_graph import load_pair_graph
    from medm2g.core.graph.plan_text import format_plan, plan_to_dict
    from medm2g.registry import load_modalities

    registry = load_modalities()
    graph = load_pair_graph(resolve_graph_path(args.graph), installed=registry)
    imaging = {name for name in graph.modalities if registry[name].spec.kind.is_imaging}
    plan = build_plan(graph, imaging=imaging)
    if args.draw:
        from medm2g.core.graph.plan_drawing import draw_plan

        written = draw_plan(plan, args.draw)
        logger.info("plan picture written to %s", written)
    print(json.dumps(plan_to_dict(plan), indent=2) if args.json else format_plan(plan))
    return 0


def _command_data_phantom(args: argparse.Namespace) -> int:
    from medm2g.core.graph.pair_graph import load_pair_graph
    from medm2g.core.phantom.cohort import generate_cohort
    from medm2g.registry import load_modalities

    registry = load_modalities()
    graph = load_pair_graph(resolve_graph_path(args.graph), installed=registry)
    summary = generate_cohort(args.out, args.n, args.seed, registry, graph)
    print(f"phantom cohort: {summary.subjects} subjects, modalities {', '.join(summary.modalities)}, "
          f"seed {args.seed}, {summary.seconds:.1f} s -> {summary.out}")
    for manifest, rows in summary.manifests.items():
        print(f"  {manifest}: {rows} records")
    print(f"  overview picture: {summary.out / 'overview.png'}")
    return 0


def _command_ingest(args: argparse.Namespace) -> int:
    from medm2g.core.data.ingest import ingest
    from medm2g.registry import load_modalities

    if args.recipe:
        return _ingest_recipe(args)
    if not args.modality:
        raise ConfigError("ingest: give --modality M (one modality's files), or --recipe NAME (a dataset's layout)")

    report = ingest(args.folder, load_modalities()[args.modality], args.out, contain=args.contain)
    print(f"{report.manifest}: {report.records} {args.modality} records from {report.files_seen} candidate files; "
          f"skipped {len(report.skipped)}")
    reasons = Counter(reason.split(":")[0] for _, reason in report.skipped)  # the kind, without file details
    for reason, count in reasons.most_common():
        print(f"  {count:4d} x {reason}")
    if report.skip_report:
        print(f"  every skipped file and its reason: {report.skip_report}")
    return 0


def _ingest_recipe(args: argparse.Namespace) -> int:
    from medm2g.core.data.recipes import run_recipe

    options = {"reports": args.reports} if args.reports else {}
    if args.reports and args.recipe != "mimic-cxr":
        raise ConfigError(f"--reports is for the mimic-cxr recipe (its reports come apart from its images), "
                          f"not {args.recipe}")
    if args.contrast:
        if args.recipe not in ("ixi", "brats"):
            raise ConfigError(f"--contrast is for the ixi and brats recipes, not {args.recipe}")
        options["contrast"] = args.contrast
    summary = run_recipe(args.recipe, args.folder, args.out, **options)
    for manifest, rows in summary.manifests.items():
        print(f"  {args.out / manifest}: {rows} records")
    skipped = sum(summary.skipped.values())
    print(f"skipped {skipped}" + (f" (every one with its reason: {summary.skip_report})" if skipped else ""))
    for reason, count in summary.skipped.most_common():
        print(f"  {count:5d} x {reason}")
    for note in summary.notes:
        print(f"note: {note}")
    print(f"pair graph: {summary.graph}  (next: medm2g plan {summary.graph}; medm2g train {summary.graph} --out RUN)")
    return 0


def _command_prompt(args: argparse.Namespace) -> int:
    from medm2g.core.prompting.generators import prompt_generator
    from medm2g.core.prompting.prompts import make_prompt
    from medm2g.core.prompting.vocabulary import installed_vocabularies
    from medm2g.registry import load_modalities

    registry = load_modalities()
    vocabularies = installed_vocabularies(registry)
    name = args.vocabulary or next(iter(vocabularies), None)
    if name not in vocabularies:
        raise ConfigError(f"--vocabulary {name!r}: installed vocabularies: {', '.join(vocabularies) or 'none'}")
    report = args.report
    path = Path(report)
    if path.suffix.lower() == ".txt" and path.is_file():
        report = path.read_text(encoding="utf-8")
    writer, writer_name = prompt_generator(args.generator, registry)
    prompt = make_prompt(report, vocabularies[name], writer, writer_name)
    print(prompt.text)
    for term in prompt.report.terms:
        if term.kind == "pathology":
            where = " ".join(filter(None, [term.side, *(term.anatomy[:1])]))
            state = ("negated" if term.negated else "stated") + (f", {where}" if where else "")
        else:
            state = "named" + (f", {term.side}" if term.side else "")
        print(f"  {term.kind:9s} {term.canonical!r} ({state}) from {term.text!r}")
    if prompt.report.unknown:
        print(f"  words the {name} vocabulary does not know: {', '.join(prompt.report.unknown)}")
    return 0


def _command_inspect(args: argparse.Namespace) -> int:
    from medm2g.core.io.inspect_file import inspect_file

    for path in args.files:
        print(inspect_file(path).summary())
    return 0


def _run_config(args: argparse.Namespace):
    """The run config: defaults, then the --config file, then the flags given on the command line."""
    from medm2g.core.config.run_config import load_run_config, with_overrides

    return with_overrides(
        load_run_config(args.config),
        size=args.size, seed=args.seed, device=args.device,
        **{"alignment.steps": args.alignment_steps,
           "alignment.visual_invariant": False if args.no_visual_invariant else None},
    )


def _open_run(args: argparse.Namespace):
    """The run of ``args.graph`` in ``args.out``, prepared the one way every command prepares a run
    (:func:`medm2g.core.training.run.open_run`): the main process of an ``accelerate launch`` binds
    the config and writes the plan and any phantom cohort first, the others then read them."""
    from medm2g.core.training.run import open_run

    return open_run(args.graph, args.out, _run_config(args))


def _print_stages(results, index_width: int, loss_digits: int) -> None:
    """One line per stage: its time this session (or that it was complete already) and its last loss."""
    for result in results:
        final = result.record.get("final", {})
        state = "already complete" if result.skipped else f"{result.record['seconds_this_session']:.0f} s"
        print(f"stage {result.stage.index:{index_width}d} {result.stage.title}: {state}, "
              f"final loss {final.get('loss', float('nan')):.{loss_digits}f}")


def _command_align(args: argparse.Namespace) -> int:
    from medm2g.core.metrics.retrieval import format_retrieval
    from medm2g.core.training.alignment import align, evaluate_alignment

    run = _open_run(args)
    results = align(run)
    if not run.engine.is_main:
        return 0
    _print_stages(results, index_width=1, loss_digits=3)
    rows = evaluate_alignment(run.plan, run.registry, run.config, args.out)
    print(f"\nheld-out retrieval ({rows[0].subjects} subjects; pairs marked 'no' were never trained together):")
    print(format_retrieval(rows))
    print(f"\nwritten: {args.out / 'eval' / 'retrieval.json'}, retrieval.md, retrieval.png; encoders in {args.out / 'encoders'}")
    return 0


def _command_train(args: argparse.Namespace) -> int:
    from medm2g.core.training.trainer import train

    run = _open_run(args)
    results = train(run)
    if not run.engine.is_main:
        return 0
    _print_stages(results, index_width=2, loss_digits=4)
    encoders = f" and {args.out / 'encoders'}" if (args.out / "encoders").is_dir() else ""
    print(f"trained models in {args.out / 'models'}{encoders}; records and loss curves in {args.out / 'stages'}")
    return 0


def _command_generate(args: argparse.Namespace) -> int:
    from medm2g.core.generation.backends import GenerationRequest, default_backend, generation_backend
    from medm2g.core.generation.conditions import read_condition
    from medm2g.core.generation.outputs import output_suffix, write_generation
    from medm2g.core.generation.trained_run import TrainedRun
    from medm2g.registry import load_modalities

    run = TrainedRun.open(args.run_dir, load_modalities(), device=args.device)
    registry = run.registry  # with the run's grids: conditions are read onto the grid it was trained on
    conditions = [read_condition(argument, registry, args.slice) for argument in args.condition or ()]
    try:
        request = GenerationRequest(outputs=args.to, conditions=conditions, samples_per_condition=args.n,
                                    seed=args.seed, joint=args.joint, steps=args.steps, guidance_scale=args.guidance,
                                    batch_size=args.batch_size, cross_guided=not args.prompt_only)
    except ValueError as error:  # the request's validators name the option: "samples_per_condition must be ..."
        raise ConfigError(f"generate: {error}") from None
    for modality in request.outputs:  # a bad --format is refused before minutes of sampling, not after
        output_suffix(registry, modality, args.format)
    backend_name = args.backend or default_backend(run, request)
    backend = generation_backend(backend_name, run)
    samples = backend.generate(request)
    command = shlex.join(["medm2g", *args.argv])
    record = write_generation(args.out, request, samples, registry, model=f"medm2g run {run.layout.root.resolve()}",
                              backend=backend_name, command=command, image_format=args.format,
                              details=backend.describe(request), record_condition_paths=args.record_condition_paths)
    for row in record["rows"]:
        texts = row.get("text", {})
        shown = ", ".join(f"{m}: {texts[m]!r}" if m in texts else f"{m} -> {path}" for m, path in row["files"].items())
        print(f"row {row['row']} (seed {row['seed']}): {shown}")
    print(f"written: {args.out / 'generation.json'}, {args.out / 'grid.png'}")
    return 0


def _task(value: str) -> tuple[str, str]:
    source, separator, target = value.partition(":")
    if not separator or not source or not target:
        raise argparse.ArgumentTypeError(f"{value!r}: expected SOURCE:TARGET, for example mri:ct")
    return source, target


def _command_eval(args: argparse.Namespace) -> int:
    from medm2g.core.evaluation.generation_eval import format_generation_scores
    from medm2g.core.evaluation.run_eval import evaluate_run
    from medm2g.core.generation.trained_run import TrainedRun
    from medm2g.core.metrics.retrieval import format_retrieval
    from medm2g.registry import load_modalities

    run = TrainedRun.open(args.run_dir, load_modalities(), device=args.device)
    result = evaluate_run(run, args.manifest, subjects=args.subjects, steps=args.steps, seed=args.seed,
                          command=shlex.join(["medm2g", *args.argv]), fid_features=args.fid_features,
                          ladder=args.finding_ladder, oracle=args.oracle or (), only=args.task,
                          other_words=args.other_words or ())
    if result.retrieval:
        print(f"held-out retrieval ({result.retrieval[0].subjects} subjects; 'no': never trained together):")
        print(format_retrieval(result.retrieval) + "\n")
    print(f"generation against the held-out truth ({result.generation[0].subjects if result.generation else 0} subjects):")
    print(format_generation_scores(result.generation))
    if result.ladder is not None:
        from medm2g.core.evaluation.probes import format_ladder

        print("where the finding is lost (95% intervals; chance in brackets):")
        print(format_ladder(result.ladder))
    if result.other_words:
        from medm2g.core.evaluation.other_words import format_other_words

        print("reports in other words, against the template (same findings, same seeds):")
        print(format_other_words(result.other_words))
    written = result.written
    picture = f", {written['picture'].name}" if "picture" in written else ""
    print(f"written: {written['json']}, {written['table'].name}{picture}"
          f"{' and retrieval.*' if result.retrieval else ''} in {written['json'].parent}")
    return 0


def _command_tune_guidance(args: argparse.Namespace) -> int:
    from medm2g.core.evaluation.guidance_tuning import format_tuned_guidance, tune_guidance
    from medm2g.core.generation.trained_run import TrainedRun
    from medm2g.registry import load_modalities

    run = TrainedRun.open(args.run_dir, load_modalities(), device=args.device)
    record = tune_guidance(run, scales=args.scales, subjects=args.subjects, steps=args.steps, seed=args.seed,
                           only=args.task)
    print(f"guidance scale per task, chosen on validation subjects (written: {run.layout.tuned_guidance}; "
          "`generate` and `eval` use it unless --guidance is given):")
    print(format_tuned_guidance(record))
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    from medm2g.core.apps.demo.pipeline import run_demo
    from medm2g.core.config.run_config import load_run_config, with_overrides
    from medm2g.registry import load_modalities

    preset = "quick" if args.quick else "demo"
    config = with_overrides(load_run_config(args.config or preset), seed=args.seed, device=args.device)
    metrics = run_demo(resolve_graph_path(args.graph), load_modalities(), config, args.out,
                       eval_subjects=args.subjects or (8 if args.quick else 16),
                       headline_subjects=args.headline_subjects or (8 if args.quick else 100),
                       eval_steps=args.steps, oracle=tuple(args.oracle),
                       showcase_subjects=2 if args.quick else 3, command=shlex.join(["medm2g", *args.argv]))
    seconds = metrics["seconds"]
    print(f"demo finished in {seconds['total']:.0f} s (" + ", ".join(
        f"{name} {value:.0f} s" for name, value in seconds.items() if name != "total") + ")")
    print(f"read first: {args.out / 'report.md'}; numbers: {args.out / 'metrics.json'}; "
          f"samples: {args.out / 'samples'}")
    return 0


def _command_serve(args: argparse.Namespace) -> int:
    from medm2g.core.apps.serve.page import import_gradio, serve

    import_gradio()  # without the extra, say how to install it before loading any model
    if not (args.run_dir / "config.yaml").is_file():
        raise ConfigError(f"{args.run_dir}: not a medm2g run folder (no config.yaml); serve a folder written by "
                          f"`medm2g train` or `medm2g demo`")
    print(f"serving {args.run_dir} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    serve(args.run_dir, host=args.host, port=args.port, work=args.work, device=args.device)
    return 0


def _command_ablate(args: argparse.Namespace) -> int:
    from medm2g.core.apps.ablation.runner import run_ablation
    from medm2g.core.apps.ablation.variants import encoder_variants
    from medm2g.core.config.run_config import load_run_config, with_overrides
    from medm2g.registry import load_modalities

    config = with_overrides(load_run_config(args.config or "ablation"), seed=args.seed, device=args.device)
    translation = tuple(args.translation.split("->")) if args.translation else None
    if translation is not None and len(translation) != 2:
        raise ConfigError(f"--translation {args.translation!r}: expected SOURCE->TARGET, e.g. mri->ct")
    record = run_ablation(resolve_graph_path(args.graph), load_modalities(), config, args.out, subjects=args.subjects,
                          steps=args.steps, translation=translation, command=shlex.join(["medm2g", *args.argv]),
                          variants=encoder_variants(args.encoders))
    print((args.out / "ablation.md").read_text(encoding="utf-8"))
    print(f"written: {args.out / 'ablation.json'}, ablation.md, ablation.png "
          f"({record['settings']['seconds_total'] / 60:.1f} min)")
    return 0


def _command_config(args: argparse.Namespace) -> int:
    import yaml

    from medm2g.core.config.run_config import load_run_config, run_config_to_dict
    from medm2g.registry import load_modalities

    config = load_run_config(args.config)
    print(yaml.safe_dump(run_config_to_dict(config), sort_keys=False), end="")
    modalities = config.modalities(load_modalities())  # each plugin's grid at this size, then `grids`
    print(f"# each imaging modality's grid at size {config.size.value} (its plugin's size_grids, then grids):")
    for name in modalities:
        spec = modalities[name].spec
        if spec.image_size is not None:
            print(f"#   {name}: image_size {list(spec.image_size)}, latent_shape {list(spec.latent_shape)}")
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help="a pair graph YAML file, or the name of one shipped with medm2g (medm2g.yaml); "
                        "a shipped graph without its data trains on a phantom cohort generated into OUT/data")
    parser.add_argument("--out", type=Path, required=True, help="run folder (an existing one is resumed)")
    parser.add_argument("--config", type=Path, help="run config YAML overriding the defaults (see `medm2g config`)")
    parser.add_argument("--size", choices=["tiny", "cpu", "paper"], help="model size (default: cpu)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--alignment-steps", type=int, metavar="N", help="optimisation steps per alignment stage")
    parser.add_argument("--no-visual-invariant", action="store_true",
                        help="drop the visual-invariant loss (the paper's VI ablation)")


def build_parser() -> argparse.ArgumentParser:
    from medm2g.core.threads import thread_count

    parser = argparse.ArgumentParser(
        prog="medm2g", description="Unified medical multi-modal generation (MedM2G) with pluggable modalities."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="CPU threads for torch, OpenMP, MKL and OpenBLAS (default: OMP_NUM_THREADS, else the "
                             "cores this process may use); waiting threads sleep unless OMP_WAIT_POLICY says otherwise")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    modalities = commands.add_parser("modalities", help="list installed modalities, their plugins and specs")
    modalities.add_argument("--json", action="store_true", help="machine-readable output")
    modalities.set_defaults(run=_command_modalities)

    plan = commands.add_parser("plan", help="show the alignment star, training stages and rounds of a pair graph")
    plan.add_argument("graph", help="a pair graph YAML file, or the name of one shipped with medm2g (medm2g.yaml)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--draw", metavar="FILE.png", type=Path, help="also draw the star and the rounds to FILE.png")
    plan.set_defaults(run=_command_plan)

    data = commands.add_parser("data", help="make data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    phantom = data_commands.add_parser(
        "phantom", help="generate the embedded default data: a phantom cohort with known findings"
    )
    phantom.add_argument("--out", type=Path, required=True, help="folder to write the cohort into")
    phantom.add_argument("--n", type=int, default=600, help="number of subjects (default 600)")
    phantom.add_argument("--seed", type=int, default=0, help="random seed; subject i depends only on it and i")
    phantom.add_argument("--graph", default="medm2g.yaml",
                         help="pair graph whose pairs get one manifest each (default: the paper's)")
    phantom.set_defaults(run=_command_data_phantom)

    ingest = commands.add_parser(
        "ingest", help="make a manifest from a folder of DICOM/NIfTI/image files, or a dataset's manifests and "
                       "pair graph from its published layout (--recipe)")
    ingest.add_argument("folder", type=Path, help="folder to search recursively (with --recipe: the dataset's folder)")
    ingest.add_argument("--modality", help="the installed modality the files are (see `medm2g modalities`)")
    ingest.add_argument("--recipe", choices=["mimic-cxr", "iu-xray", "synthrad", "gold-atlas", "ixi", "brats"],
                        help="read a public dataset's layout: writes OUT/data/*.csv (subject-level splits), "
                             "OUT/data/skipped.csv and the pair graph OUT/<recipe>.yaml")
    ingest.add_argument("--contrast", help="ixi, brats: the MRI contrast the manifest holds (ixi: t1, t2, pd; "
                                           "brats: t1, t1ce, t2, flair; default t1)")
    ingest.add_argument("--reports", type=Path,
                        help="mimic-cxr: the MIMIC-CXR reports folder (default: FOLDER/mimic-cxr-reports, else FOLDER)")
    ingest.add_argument("--out", type=Path, required=True,
                        help="manifest to write (CSV); with --recipe, the folder for the manifests and graph")
    ingest.add_argument("--contain", action="store_true",
                        help="refuse paths that lead out of the manifest's folder (../, absolute, symbolic links "
                             "out): for shared servers (default: allowed, for datasets stored apart, and reported)")
    ingest.set_defaults(run=_command_ingest)

    align = commands.add_parser(
        "align", help="central alignment: train the prompt encoders along the star, then score held-out retrieval")
    _add_run_options(align)
    align.set_defaults(run=_command_align)

    train = commands.add_parser(
        "train", help="the whole plan: alignment, VAEs, single-modality LDMs, then the multi-flow rounds")
    _add_run_options(train)
    train.set_defaults(run=_command_train)

    generate = commands.add_parser(
        "generate", help="any-to-any generation from a trained run (text to image, image to text, image to image, joint)")
    generate.add_argument("run_dir", metavar="RUN", type=Path, help="a run folder written by `medm2g train`")
    generate.add_argument("--to", nargs="+", required=True, metavar="MODALITY", help="the modalities to generate")
    generate.add_argument("--from", dest="condition", action="append", metavar="MODALITY=VALUE",
                          help="a condition: a file the modality reads (DICOM, NIfTI, PNG, .txt) or, for text, the "
                               "report itself; repeat for several (one set of rows each); none: unconditional")
    generate.add_argument("--joint", action="store_true",
                          help="sample the --to modalities together, each attending to the others' latents")
    generate.add_argument("--record-condition-paths", action="store_true",
                          help="write the conditions' file paths into generation.json (never into the generated "
                               "files); by default a condition is named by its modality and a content hash only")
    generate.add_argument("--out", type=Path, required=True, help="folder for the samples, generation.json and grid.png")
    generate.add_argument("-n", type=int, default=1, help="samples per condition (default 1)")
    generate.add_argument("--seed", type=int, default=0, help="row i uses seed+i (default 0)")
    generate.add_argument("--steps", type=int, help="sampling steps (default: the run's, 50; syndiff: its 4)")
    generate.add_argument("--guidance", type=float,
                          help="classifier-free guidance scale (default: the one `medm2g tune-guidance` chose for "
                               "the task, else the run config's, 2.0)")
    generate.add_argument("--slice", type=int, help="which slice of a volume condition (default: the middle one)")
    generate.add_argument("--format", help="file type for imaging outputs: png, nii.gz, dcm or npy "
                                           "(default: png for images, nii.gz for volumes)")
    generate.add_argument("--batch-size", type=int, default=8, help="rows sampled at once (default 8)")
    generate.add_argument("--prompt-only", action="store_true",
                          help="condition on the prompt embedding alone, not also on the condition's latent through "
                               "the rounds' cross-guidance (the default where the run has it)")
    generate.add_argument("--backend",
                          help="generation backend (default: medm2g where the run can, else the run's trained "
                               "translation edge for --from and --to, e.g. syndiff)")
    generate.add_argument("--device", help="auto (default: the run's), cpu, cuda, ...")
    generate.set_defaults(run=_command_generate)

    evaluate = commands.add_parser(
        "eval", help="score a trained run on held-out subjects: retrieval, and every generation task against the truth")
    evaluate.add_argument("run_dir", metavar="RUN", type=Path, help="a run folder written by `medm2g train`")
    evaluate.add_argument("--manifest", type=Path, help="held-out manifest (default: the graph's 'evaluation')")
    evaluate.add_argument("--subjects", type=int, default=16, help="held-out subjects per task (default 16)")
    evaluate.add_argument("--steps", type=int, help="sampling steps (default: the run's, 50)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    evaluate.add_argument("--fid-features", metavar="timm:ARCH:WEIGHTS.safetensors | run:RUN",
                          help="FID on this timm network with local weights, or on another run's aligned encoders "
                               "(default: this run's aligned encoder of each target modality, labelled as such; "
                               "never Inception)")
    evaluate.add_argument("--device", help="auto (default: the run's), cpu, cuda, ...")
    evaluate.add_argument("--task", action="append", type=_task, metavar="SOURCE:TARGET",
                          help="score only this generation task (repeatable; default: every task of the run)")
    evaluate.add_argument("--finding-ladder", action="store_true",
                          help="also find where a stated finding is lost (data with known findings): probes of each "
                               "condition embedding, the reader on VAE reconstructions, then on generated images")
    evaluate.add_argument("--oracle", nargs="+", metavar="MODALITY",
                          help="add to the finding ladder an LDM of each imaging MODALITY conditioned on the finding "
                               "itself, trained for the run's LDM steps: the ceiling at this budget (it trains: minutes)")
    evaluate.add_argument("--other-words", nargs="+", metavar="MODALITY",
                          help="also generate each imaging MODALITY from the held-out reports and from the same "
                               "findings in words the cohort never uses, and compare the side read (phantom data)")
    evaluate.set_defaults(run=_command_eval)

    tune = commands.add_parser(
        "tune-guidance", help="choose each task's classifier-free guidance scale on validation subjects "
                              "(RUN/guidance.json, used by generate and eval)")
    tune.add_argument("run_dir", metavar="RUN", type=Path, help="a run folder written by `medm2g train`")
    tune.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0],
                      help="candidate scales (default 1 2 3 5)")
    tune.add_argument("--subjects", type=int, default=32, help="validation subjects per task (default 32)")
    tune.add_argument("--steps", type=int, help="sampling steps (default: the run's)")
    tune.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    tune.add_argument("--task", action="append", type=_task, metavar="SOURCE:TARGET",
                      help="tune only this task (repeatable; default: every task with validation pairs)")
    tune.add_argument("--device", help="auto (default: the run's), cpu, cuda, ...")
    tune.set_defaults(run=_command_tune_guidance)

    demo = commands.add_parser(
        "demo", help="the main job end to end: phantom data, the whole plan, evaluation, samples of every task, report.md")
    demo.add_argument("--out", type=Path, required=True, help="the demo folder (a run folder; an existing one is resumed)")
    demo.add_argument("--quick", action="store_true",
                      help="tiny models and few steps: every output in about three and a half minutes, samples not meaningful")
    demo.add_argument("--graph", default="three-systems.yaml",
                      help="pair graph (default: the paper's with SynDiff MRI <-> CT and vq-ar report -> CT beside it, "
                           "shipped with medm2g; medm2g.yaml is the paper's alone)")
    demo.add_argument("--config", type=Path,
                      help="run config instead of the demo preset (default: `demo`, with --quick `quick`)")
    demo.add_argument("--seed", type=int, help="random seed of data, training and sampling (default 0)")
    demo.add_argument("--subjects", type=int, help="held-out subjects per evaluated task (default 16, quick 8)")
    demo.add_argument("--headline-subjects", type=int,
                      help="held-out subjects of the headline tasks (text -> ct, mri -> ct and its baselines, every "
                           "report task) and the finding ladder (default 100, quick 8)")
    demo.add_argument("--steps", type=int, help="sampling steps for evaluation and samples (default: the config's)")
    demo.add_argument("--device", help="auto (default), cpu, cuda, ...")
    demo.add_argument("--oracle", nargs="*", default=["ct"], metavar="MODALITY",
                      help="imaging modalities whose oracle LDM (conditioned on the finding itself, trained for the "
                           "run's LDM steps) the finding ladder shows (default: ct, the demo's headline target; "
                           "none: --oracle with no name)")
    demo.set_defaults(run=_command_demo)

    serve = commands.add_parser(
        "serve", help="a local web page to try a trained run: report to images, image to anything, the run at a glance")
    serve.add_argument("run_dir", metavar="RUN", type=Path, help="a run folder (`medm2g train` or `medm2g demo`)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--work", type=Path,
                       help="folder for each request's files and uploads (default: a new temporary folder)")
    serve.add_argument("--device", help="auto (default: the run's), cpu, cuda, ...")
    serve.set_defaults(run=_command_serve)

    ablate = commands.add_parser(
        "ablate", help="the paper's ablation in miniature: all eight CA/LCAG/VI combinations, plus translation baselines")
    ablate.add_argument("--out", type=Path, required=True, help="folder for the four runs and the table (resumable)")
    ablate.add_argument("--graph", default="medm2g.yaml", help="pair graph (default: the paper's, shipped with medm2g)")
    ablate.add_argument("--config", type=Path, help="base run config (default: the `ablation` preset)")
    ablate.add_argument("--subjects", type=int, default=12, help="held-out subjects per task (default 12)")
    ablate.add_argument("--steps", type=int, help="sampling steps (default: the config's)")
    ablate.add_argument("--translation", default="mri->ct",
                        help="image translation to compare with baselines, SOURCE->TARGET (default mri->ct; '' for none)")
    ablate.add_argument("--encoders", help="only these encoder variants, comma-separated (ca1-vi1, ca1-vi0, ca0-vi1, "
                        "ca0-vi0, ca1-vi1-prompts; default all), e.g. ca1-vi1,ca1-vi1-prompts for what prompting adds")
    ablate.add_argument("--seed", type=int, help="random seed (default 0)")
    ablate.add_argument("--device", help="auto (default), cpu, cuda, ...")
    ablate.set_defaults(run=_command_ablate)

    config = commands.add_parser("config", help="print the full run config (defaults, or a file's with defaults filled)")
    config.add_argument("config", nargs="?", type=Path, help="a run config YAML file")
    config.set_defaults(run=_command_config)

    prompt = commands.add_parser(
        "prompt", help="anatomy-pathology prompting: a report's descriptive prompt in a vocabulary's terms, and the "
                       "terms found (negations and sides)")
    prompt.add_argument("report", help="the report itself, or a .txt file holding it")
    prompt.add_argument("--vocabulary", help="an installed vocabulary (default: the first; the text plugin's are "
                                             "head and chest)")
    prompt.add_argument("--generator", default="grammar",
                        help="who writes the prompt: grammar (the default, deterministic and offline), a writer a plugin "
                             "registers (medm2g_prompt_generators), or a folder holding a local causal language model; "
                             "a prompt with a word outside the vocabulary is refused")
    prompt.set_defaults(run=_command_prompt)

    inspect = commands.add_parser("inspect", help="tell whether files were generated, and by what")
    inspect.add_argument("files", nargs="+", type=Path, help="DICOM files or series folders, PNG, NIfTI, text")
    inspect.set_defaults(run=_command_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from medm2g.core.threads import configure_threads

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in outputs, so a result says how to make it again
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    configure_threads(args.threads)  # before anything loads torch, numpy or their thread pools
    if not args.verbose:
        # pydicom logs per-file oddities (implicit VR, padding); reasons that matter reach the
        # user as DataErrors, so show pydicom's chatter only with --verbose
        import pydicom  # noqa: F401  (pydicom sets its logger's level on import: import it first)

        logging.getLogger("pydicom").setLevel(logging.ERROR)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        status = run(args)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not at the interpreter's exit
        return status
    except MedM2GError as error:
        print(f"medm2g: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stop quietly, as `yes | head` does; stdout goes to /dev/null so that the interpreter's
        # last flush of what is still buffered cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: the status a shell reports for a writer killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
