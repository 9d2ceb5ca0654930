"""`prompting.condition_on_prompts`: the report encoder reads each report's anatomy-pathology prompt,
with its weights and their names unchanged; image encoders are left alone."""

import attrs
import pytest
import torch

from medm2g.core.config.prompting import PromptingConfig
from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import ConfigError
from medm2g.core.training.encoders import build_prompt_encoder

PLAIN = RunConfig(size="tiny", device="cpu")
PROMPTED = attrs.evolve(PLAIN, prompting=PromptingConfig(condition_on_prompts=True))


def test_the_report_encoder_reads_the_prompt_and_keeps_its_weights(installed):
    plain, prompted = build_prompt_encoder(installed, "text", PLAIN), build_prompt_encoder(installed, "text", PROMPTED)
    assert list(plain.state_dict()) == list(prompted.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), prompted.state_dict().values()))
    plain.eval(), prompted.eval()
    reports = ["Findings: acute bleed in the left temporal lobe. No oedema.", "Normal brain."]
    with torch.no_grad():
        assert torch.equal(prompted(reports),
                           plain(["haemorrhage in the left temporal lobe; no oedema", "normal brain parenchyma"]))
        assert not torch.equal(prompted(reports), plain(reports))


def test_image_encoders_are_not_touched_and_an_unknown_vocabulary_is_named(installed):
    assert not build_prompt_encoder(installed, "ct", PROMPTED)._forward_pre_hooks
    wrong = attrs.evolve(PROMPTED, prompting=PromptingConfig(vocabulary="knee", condition_on_prompts=True))
    with pytest.raises(ConfigError, match=r"prompting.vocabulary: 'knee' is not an installed vocabulary "
                                          r"\(installed: chest, head\)"):
        build_prompt_encoder(installed, "text", wrong)
