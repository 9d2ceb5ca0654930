"""One optimiser-settings record: every stage's config section extends it, YAML stays flat."""

import logging

import attrs
import pytest
import torch

from medm2g.core.config.run_config import RunConfig, run_config_to_dict, structure_run_config
from medm2g.core.errors import ConfigError
from medm2g.core.optimisation import OPTIMISER_FIELDS, OptimiserSettings

SECTIONS = ("alignment", "vae", "ldm", "cross_guidance")


@pytest.mark.parametrize("section", SECTIONS)
def test_every_stage_section_is_the_one_record_with_its_own_defaults(section):
    settings = getattr(RunConfig(), section)
    assert isinstance(settings, OptimiserSettings)
    base = {field.name: field for field in attrs.fields(OptimiserSettings)}
    for name in OPTIMISER_FIELDS:  # declared once: the section's field is the base's, validator and all
        field = attrs.fields_dict(type(settings))[name]
        assert field.validator is base[name].validator and field.inherited
        assert getattr(settings, name) == type(settings).DEFAULTS[name]
    assert list(run_config_to_dict(RunConfig())[section])[:6] == list(OPTIMISER_FIELDS)  # flat YAML, shared first


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize("field, value, expected", [("learning_rate", float("nan"), "finite"),
                                                    ("batch_size", 1, "at least 2"),
                                                    ("warmup_steps", -1, "zero or positive")])
def test_a_bad_value_is_refused_in_every_section_with_its_path(section, field, value, expected):
    with pytest.raises(ConfigError, match=rf"run.yaml: {section}[.:] ?{field}.*{expected}"):
        structure_run_config({section: {field: value}}, "run.yaml")


def test_the_optimiser_is_adamw_or_the_papers_adam_with_the_record_s_numbers():
    settings = structure_run_config({"ldm": {"learning_rate": 2e-5, "text_learning_rate": 5e-5,
                                             "weight_decay": 1e-4}}).ldm
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    image = settings.optimiser(parameters)
    assert isinstance(image, torch.optim.AdamW) and image.defaults["lr"] == 2e-5 and image.defaults["weight_decay"] == 1e-4
    assert settings.optimiser(parameters, settings.text_learning_rate).defaults["lr"] == 5e-5
    rounds = settings.optimiser(parameters, decoupled_weight_decay=False)
    assert type(rounds) is torch.optim.Adam


def test_the_ldm_s_old_image_learning_rate_name_still_reads_and_both_names_are_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="medm2g"):
        old = structure_run_config({"ldm": {"image_learning_rate": 2e-5}}, "old.yaml")
    assert old.ldm.learning_rate == 2e-5 and "old.yaml: ldm.image_learning_rate is now ldm.learning_rate" in caplog.text
    with pytest.raises(ConfigError, match="old.yaml: ldm: image_learning_rate is the old name of learning_rate"):
        structure_run_config({"ldm": {"image_learning_rate": 2e-5, "learning_rate": 1e-4}}, "old.yaml")
