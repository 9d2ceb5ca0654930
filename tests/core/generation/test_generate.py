"""`medm2g generate` on a tiny trained run: every task kind, files, provenance, seeds, errors."""

import json

import attrs
import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.errors import CheckpointError, ConfigError, DataError
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import content_digest, read_condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.io.inspect_file import inspect_file

REPORT = "Findings: a lesion is seen in the left frontal lobe. Impression: left lesion."


@pytest.fixture(scope="module")
def trained(tiny_trained_run, installed):
    return TrainedRun.open(tiny_trained_run, installed, device="cpu")


def test_text_to_images_writes_files_with_provenance_a_record_and_a_grid(tiny_trained_run, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", str(tiny_trained_run), "--from", f"text={REPORT}", "--to", "xray", "ct",
                 "-n", "2", "--seed", "7", "--out", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert [row["seed"] for row in record["rows"]] == [7, 8]
    assert record["conditions"] == [f'text "{REPORT[:57]}..."']
    assert record["command"].startswith("medm2g generate ") and "--seed 7" in record["command"]
    first = record["rows"][0]["files"]
    assert first == {"xray": "row-000/xray.png", "ct": "row-000/ct.nii.gz"}
    inspected = inspect_file(out / first["ct"])
    assert inspected.synthetic and inspected.provenance.seed == 7
    assert "left frontal" in inspected.provenance.source
    assert record["joint"] is False and record["outputs"] == ["xray", "ct"]
    assert record["latent_cross_guidance_from"] == "text"  # the run has rounds: the report's latent guides
    assert (out / "grid.png").stat().st_size > 5000
    assert "row 1 (seed 8)" in capsys.readouterr().out
    assert main(["generate", str(tiny_trained_run), "--from", f"text={REPORT}", "--to", "xray", "--prompt-only",
                 "--out", str(tmp_path / "prompt")]) == 0
    assert json.loads((tmp_path / "prompt" / "generation.json").read_text())["latent_cross_guidance_from"] is None


def test_image_to_text_decodes_a_report_with_its_provenance_beside_it(tiny_trained_run, blob_cohort, tmp_path):
    out = tmp_path / "gen"
    xray = sorted((blob_cohort / "subjects").glob("*/xray.png"))[0]
    assert main(["generate", str(tiny_trained_run), "--from", f"xray={xray}", "--to", "text", "--out", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    report = (out / "row-000" / "text.txt").read_text()
    assert report.strip() == record["rows"][0]["text"]["text"].strip()
    sidecar = json.loads((out / "row-000" / "text.txt.medm2g.json").read_text())
    assert sidecar["source"] == f"xray {content_digest(xray)}"  # never the file's name (issue 19)


def test_an_image_condition_drives_a_modality_it_was_never_paired_with(trained, blob_cohort, installed):
    """X-ray and CT never share a dataset in the blob graph: X-ray conditions CT through the aligned space."""
    xray = sorted((blob_cohort / "subjects").glob("*/xray.png"))[0]
    condition = read_condition(f"xray={xray}", installed)
    (sample,) = CrossGuidedGenerator(trained).generate(GenerationRequest(outputs=["ct"], conditions=[condition]))
    ct = sample.outputs["ct"]
    assert ct.shape == (1, 64, 64) and ct.dtype == torch.float32
    assert torch.isfinite(ct).all() and ct.min() >= -1 and ct.max() <= 1


def test_a_row_regenerated_alone_from_its_seed_equals_the_row_in_the_batch(trained, installed):
    condition = read_condition(f"text={REPORT}", installed)
    generator = CrossGuidedGenerator(trained)
    batch = generator.generate(GenerationRequest(outputs=["xray"], conditions=[condition], samples_per_condition=3,
                                                 seed=4))
    again = generator.generate(GenerationRequest(outputs=["xray"], conditions=[condition], samples_per_condition=3,
                                                 seed=4, batch_size=2))
    alone = generator.generate(GenerationRequest(outputs=["xray"], conditions=[condition], seed=batch[2].seed))
    torch.testing.assert_close(alone[0].outputs["xray"], batch[2].outputs["xray"], atol=1e-5, rtol=0)
    for first, second in zip(batch, again):
        torch.testing.assert_close(first.outputs["xray"], second.outputs["xray"], atol=1e-5, rtol=0)
    assert not torch.allclose(batch[0].outputs["xray"], batch[1].outputs["xray"])


@pytest.mark.parametrize("timesteps", ["shared", "independent"])
def test_a_condition_with_cross_guided_parts_guides_through_its_own_latent(trained, installed, blob_cohort,
                                                                          monkeypatch, timesteps):
    from medm2g.core.config.run_config import with_overrides

    run = attrs.evolve(trained, config=with_overrides(trained.config, **{"cross_guidance.timesteps": timesteps}))
    condition = read_condition(f"text={REPORT}", installed)
    generator = CrossGuidedGenerator(run)
    request = GenerationRequest(outputs=["xray", "ct"], conditions=[condition], seed=2)
    assert generator.cross_conditioning(request) == "text"
    seen = []
    side = run.cross_guided("text")

    def guidance(latents, timesteps):
        seen.append((tuple(latents.shape), int(timesteps[0])))
        return type(side).guidance(side, latents, timesteps)

    monkeypatch.setattr(side, "guidance", guidance)
    guided = generator.generate(request)
    steps = run.config.diffusion.sampling_steps
    assert {shape for shape, _ in seen} == {(1, *installed["text"].spec.latent_shape)}
    if timesteps == "shared":  # the paper: the condition's latent noised afresh to each step's t
        assert len(seen) == 2 * 2 * steps  # two outputs, conditioned and null branch of guidance, every step
        assert len({t for _, t in seen}) == steps
    else:  # the clean latent (t = 0), read once per output: the same tokens at every step
        assert seen == [((1, *installed["text"].spec.latent_shape), 0)] * 2
    seen.clear()
    prompt_only = generator.generate(attrs.evolve(request, cross_guided=False))
    assert not seen
    assert not torch.allclose(guided[0].outputs["xray"], prompt_only[0].outputs["xray"])
    image = read_condition(f"xray={sorted((blob_cohort / 'subjects').glob('*/xray.png'))[0]}", installed)
    assert generator.cross_conditioning(attrs.evolve(request, conditions=[condition, image])) is None  # mixed


def test_joint_generation_guides_each_output_by_the_others_latents_never_its_own(trained, installed, monkeypatch):
    tokens, seen = {}, []
    for modality in ("xray", "ct"):
        side = trained.cross_guided(modality)

        def guidance(latents, timesteps, side=side, modality=modality):
            result = type(side).guidance(side, latents, timesteps)
            tokens[modality] = result
            return result

        def denoise(latents, timesteps, context, guidance=None, forward=side.denoiser.forward, modality=modality):
            seen.append((modality, guidance))
            return forward(latents, timesteps, context, guidance)

        monkeypatch.setattr(side, "guidance", guidance)
        monkeypatch.setattr(side.denoiser, "forward", denoise)
    condition = read_condition(f"text={REPORT}", installed)
    (sample,) = CrossGuidedGenerator(trained).generate(
        GenerationRequest(outputs=["xray", "ct"], conditions=[condition], joint=True))
    assert sample.outputs["xray"].shape == sample.outputs["ct"].shape == (1, 64, 64)
    steps = trained.config.diffusion.sampling_steps
    assert len(seen) == 2 * 2 * steps  # two outputs, conditioned and null context, every step
    for modality, guidance in seen:
        other = "ct" if modality == "xray" else "xray"
        assert guidance is not None and guidance.shape == tokens[other].shape
    last_xray = [g for m, g in seen if m == "xray"][-1]
    assert torch.equal(last_xray, tokens["ct"]) and not torch.equal(last_xray, tokens["xray"])


def test_joint_text_and_image_generation_through_the_command(tiny_trained_run, tmp_path):
    out = tmp_path / "joint"
    assert main(["generate", str(tiny_trained_run), "--from", f"text={REPORT}", "--to", "text", "xray", "ct",
                 "--joint", "--out", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["joint"] is True and set(record["rows"][0]["files"]) == {"text", "xray", "ct"}
    assert "jointly with text, xray, ct" in inspect_file(out / "row-000" / "xray.png").provenance.source


def test_unconditional_generation_needs_no_condition(trained):
    samples = CrossGuidedGenerator(trained).generate(GenerationRequest(outputs=["ct"], samples_per_condition=2))
    assert [s.condition for s in samples] == [None, None]
    assert samples[0].outputs["ct"].shape == (1, 64, 64)


def test_a_generation_the_run_cannot_do_is_refused_with_what_it_can(trained, installed, tmp_path):
    generator = CrossGuidedGenerator(trained)
    with pytest.raises(ConfigError, match=r"cannot generate 'mri'.*it can generate: ") as refused:
        generator.generate(GenerationRequest(outputs=["mri"]))
    assert sorted(str(refused.value).rsplit(": ", 1)[1].rstrip(")").split(", ")) == ["ct", "text", "xray"]
    with pytest.raises(ConfigError, match="joint generation needs at least two outputs"):
        generator.generate(GenerationRequest(outputs=["ct"], joint=True))
    with pytest.raises(ConfigError, match="expected MODALITY=FILE"):
        read_condition("a report without a modality", installed)
    with pytest.raises(ConfigError, match="unknown modality 'txt'.*did you mean 'text'"):
        read_condition("txt=hello", installed)
    with pytest.raises(DataError, match="missing.txt: file not found"):
        read_condition(f"text={tmp_path / 'missing.txt'}", installed)
    with pytest.raises(CheckpointError, match="not a medm2g run folder"):
        TrainedRun.open(tmp_path, installed)


def test_a_bad_generation_option_is_an_error_message_not_a_traceback(tiny_trained_run, tmp_path, capsys):
    assert main(["generate", str(tiny_trained_run), "--to", "ct", "-n", "0", "--out", str(tmp_path / "g")]) == 1
    assert "generate: samples_per_condition must be positive, got 0" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_an_imaging_format_the_modality_cannot_write_is_refused_before_sampling(tiny_trained_run, tmp_path, capsys):
    assert main(["generate", str(tiny_trained_run), "--to", "ct", "--format", "jpg", "--out", str(tmp_path / "g")]) == 1
    assert "--format 'jpg': ct is written as one of" in capsys.readouterr().err
