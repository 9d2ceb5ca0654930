"""Run configs: defaults, YAML overrides, errors naming file and field, model options reaching the plugins."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medm2g.core.config.run_config import (
    RunConfig,
    load_run_config,
    resolve_run_config_path,
    run_config_to_dict,
    structure_run_config,
    with_overrides,
)
from medm2g.core.errors import CheckpointError, ConfigError, PluginError
from medm2g.core.io.imaging import window_to_model


def test_no_file_means_the_documented_defaults():
    config = load_run_config(None)
    assert config.size.value == "cpu" and config.embed_dim == 256
    assert config.alignment.visual_invariant and config.alignment.lambda_offdiagonal == 0.0051


def test_a_file_overrides_a_subset_and_round_trips(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("size: tiny\nalignment:\n  steps: 7\n  visual_invariant: false\n"
                    "models:\n  xray:\n    prompt_encoder: {backbone: resnet10t}\n")
    config = load_run_config(path)
    assert (config.size.value, config.alignment.steps, config.alignment.visual_invariant) == ("tiny", 7, False)
    assert config.alignment.batch_size == 32  # untouched default
    assert config.model_options("xray", "prompt_encoder") == {"backbone": "resnet10t"}
    assert config.model_options("ct", "prompt_encoder") == {}
    assert structure_run_config(run_config_to_dict(config)) == config


@pytest.mark.parametrize("text, message", [
    ("alignment:\n  stepz: 3\n", r"run.yaml: alignment: unknown key\(s\) stepz"),
    ("alignment:\n  steps: 0\n", r"run.yaml: alignment: steps must be positive, got 0"),
    ("alignment:\n  batch_size: 1\n", r"alignment: batch_size must be at least 2"),
    ("alignment:\n  visual_invariant: 'no'\n", r"alignment.visual_invariant: expected true or false"),
    ("size: huge\n", r"run.yaml: size: 'huge' is not a valid ModelSize"),
    ("models:\n  xray:\n    unet_thing: {}\n", r"models: xray.unet_thing: unknown model part"),
    ("- 1\n", r"run.yaml: expected a mapping of run settings, got list"),
    ("alignment: [\n", r"run.yaml: malformed YAML: line 2"),
    ("acceleration:\n  mixed_precision: fp8\n", r"run.yaml: acceleration: mixed_precision must be one of no, bf16, fp16, got 'fp8'"),
    ("acceleration:\n  ema_decay: 1.0\n", r"run.yaml: acceleration: ema_decay must be in \[0, 1\), got 1.0"),
    ("acceleration:\n  gradient_accumulation_steps: 0\n", r"acceleration: gradient_accumulation_steps must be positive"),
])
def test_bad_files_name_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


def test_command_line_overrides_replace_dotted_fields():
    config = with_overrides(RunConfig(), **{"alignment.steps": 9, "seed": None, "size": "tiny"})
    assert (config.alignment.steps, config.seed, config.size.value) == (9, 0, "tiny")
    with pytest.raises(ConfigError, match="command line: alignment: steps must be positive"):
        with_overrides(RunConfig(), **{"alignment.steps": -1})


def test_an_unknown_encoder_option_is_named_with_a_suggestion(installed):
    with pytest.raises(PluginError, match=r"models.xray.prompt_encoder: unknown option 'backbon' \(did you mean 'backbone'\?\)"):
        installed["xray"].prompt_encoder("tiny", 16, {"backbon": "resnet10t"})
    with pytest.raises(PluginError, match=r"models.text.prompt_encoder: unknown option 'pretraned'"):
        installed["text"].prompt_encoder("tiny", 16, {"pretraned": "/x"})


def test_a_timm_backbone_is_chosen_by_name_and_loads_local_weights(installed, tmp_path):
    torch.manual_seed(0)
    source = installed["ct"].prompt_encoder("tiny", 16, {"backbone": "resnet10t"})
    assert type(source.backbone).__name__ == "ResNet" and source.backbone.conv1[0].in_channels == 1
    weights = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(weights))
    loaded = installed["ct"].prompt_encoder("tiny", 16, {"backbone": "resnet10t", "weights": str(weights)})
    for name, tensor in source.backbone.state_dict().items():
        assert torch.equal(tensor, loaded.backbone.state_dict()[name])
    with pytest.raises(CheckpointError, match="weights do not fit timm model 'test_resnet'"):
        installed["ct"].prompt_encoder("tiny", 16, {"weights": str(weights)})


def test_a_local_hugging_face_bert_folder_replaces_the_default_text_encoder(installed, tmp_path):
    from transformers import BertConfig, BertModel

    from medm2g.plugins.text.plugin import default_tokenizer

    folder = tmp_path / "radiology-bert"
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(default_tokenizer()), hidden_size=24, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=48, max_position_embeddings=64))
    bert.save_pretrained(folder)
    default_tokenizer().save_pretrained(folder)
    encoder = installed["text"].prompt_encoder("tiny", 16, {"pretrained": str(folder)})
    assert encoder.bert.config.hidden_size == 24
    assert torch.equal(encoder.bert.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert encoder(["Left frontal mass.", "Normal brain."]).shape == (2, 16)
    with pytest.raises(CheckpointError, match="absent: tokenizer vocabulary not found"):
        installed["text"].prompt_encoder("tiny", 16, {"pretrained": str(tmp_path / "absent")})


def test_the_paper_preset_has_the_papers_sizes_and_learning_rates(installed):
    config = load_run_config("paper")
    assert config.size.value == "paper" and config.embed_dim == 768
    assert (config.ldm.learning_rate, config.ldm.text_learning_rate) == (2e-5, 5e-5)
    assert (config.cross_guidance.learning_rate, config.cross_guidance.weight_decay) == (1e-5, 1e-4)
    registry = config.modalities(installed)
    for modality in ("xray", "ct", "mri"):
        assert registry[modality].spec.image_size == (256, 256)
        assert registry[modality].spec.latent_shape == (4, 64, 64)
    assert installed["ct"].spec.image_size == (64, 64)  # the installed registry itself is unchanged
    with torch.device("meta"):  # shapes only: the paper's UNet has 860M parameters
        vae = registry["ct"].vae(config.size)
        unet = registry["ct"].unet(config.size, config.embed_dim)
        text = registry["text"].unet(config.size, config.embed_dim)
    assert len(vae.autoencoder.encoder.down_blocks) == 3  # 256 -> 64: two downsamplings
    assert unet.unet.config.sample_size == 64 and unet.unet.config.block_out_channels == (320, 640, 1280, 1280)
    assert len(text.blocks) == 2


def test_a_grid_that_does_not_fit_or_names_no_modality_is_refused(installed, tmp_path):
    bad = structure_run_config({"grids": {"ct": {"image_size": [256, 256], "latent_shape": [4, 60, 64]}}})
    with pytest.raises(ConfigError, match=r"grids: ct: latent_shape \(4, 60, 64\) must downsample"):
        bad.modalities(installed)
    unknown = structure_run_config({"grids": {"cta": {"image_size": [256, 256], "latent_shape": [4, 64, 64]}}})
    with pytest.raises(ConfigError, match="unknown modality 'cta' .did you mean 'ct'"):
        unknown.modalities(installed)
    presets = "ablation, demo, paper, paper-pretrained, quick"
    with pytest.raises(ConfigError, match=rf"no such run config file \(presets shipped with medm2g: {presets}\)"):
        load_run_config(tmp_path / "papers")


def test_medm2g_config_prints_a_preset_by_name_ready_to_load_back(capsys, tmp_path):
    from medm2g.core.apps.cli import main

    assert main(["config", "paper"]) == 0
    printed = capsys.readouterr().out
    assert "size: paper" in printed and "#   ct: image_size [256, 256], latent_shape [4, 64, 64]" in printed
    (tmp_path / "copy.yaml").write_text(printed)
    assert load_run_config(tmp_path / "copy.yaml") == load_run_config("paper")


def test_a_folder_named_like_a_preset_does_not_hide_the_preset(tmp_path, monkeypatch):
    (tmp_path / "ablation").mkdir()  # `medm2g ablate --out ablation` run from here made it
    monkeypatch.chdir(tmp_path)
    assert load_run_config("ablation") == load_run_config(resolve_run_config_path("ablation.yaml"))
    assert resolve_run_config_path("ablation").parent.name == "presets"


def test_a_grid_can_narrow_a_modality_s_intensity_window_and_only_where_units_are_absolute(installed):
    config = structure_run_config({"grids": {"ct": {"intensity_window": [-100, 200]}}})
    ct = config.modalities(installed)["ct"].spec
    assert ct.intensity.window == (-100.0, 200.0)
    assert ct.intensity.display_window == (-20.0, 100.0)  # still inside: kept
    assert ct.image_size == installed["ct"].spec.image_size  # fields not given stay the plugin's
    # 40 HU (grey matter) now maps to 2 * 140 / 300 - 1
    assert window_to_model(np.array([40.0]), ct.intensity)[0] == pytest.approx(2 * 140 / 300 - 1)
    narrow = structure_run_config({"grids": {"ct": {"intensity_window": [0, 80]}}}).modalities(installed)
    assert narrow["ct"].spec.intensity.display_window is None  # (-20, 100) no longer fits
    mri = structure_run_config({"grids": {"mri": {"intensity_window": [0, 100]}}})
    with pytest.raises(ConfigError, match="grids: mri: intensity_window: mri has no absolute intensity unit"):
        mri.modalities(installed)
