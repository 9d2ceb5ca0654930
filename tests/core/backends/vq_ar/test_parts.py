"""The vq-ar backend's parts on tiny models: the codebook's round trip and usage, the prompt tokens,
the word-patch alignment finding a planted patch, a stopped phase resuming to the same weights, and
the transformer's sampling reproducible per row."""

import pytest
import torch

from medm2g.core.backends.vq_ar.alignment import WordPatchAlignment, heat_map, key_patches
from medm2g.core.backends.vq_ar.codebook import VisualCodebook, codebook_usage
from medm2g.core.backends.vq_ar.model import VQAutoregressive
from medm2g.core.backends.vq_ar.tokens import PAD, UNKNOWN, PromptTokens, prompt_terms, term_span, words_of
from medm2g.core.backends.vq_ar.training import codebook_step, train_phase, transformer_step
from medm2g.core.config.vq_ar import VQArConfig
from medm2g.core.prompting.for_run import RunPrompts
from medm2g.core.prompting.prompts import make_prompt
from medm2g.core.prompting.vocabulary import installed_vocabularies

TINY = VQArConfig(widths=(8, 8, 8), codebook_size=16, code_dim=4, codebook_steps=6, discriminator_start=2,
                  dead_code_restart_every=3, alignment_dim=16, transformer_width=16, transformer_layers=1,
                  transformer_heads=2, batch_size=4, key_patches=2)


@pytest.fixture(scope="module")
def head(installed):
    return installed_vocabularies(installed)["head"]


def test_the_codebook_encodes_a_grid_of_indices_in_range_and_decodes_back_to_the_image_shape():
    torch.manual_seed(0)
    codebook = VisualCodebook(1, 32, TINY)
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        indices = codebook.encode(images)
        decoded = codebook.decode(indices)
    assert indices.shape == (3, 8, 8) and indices.dtype == torch.long  # two halvings: a quarter of the side
    assert int(indices.min()) >= 0 and int(indices.max()) < TINY.codebook_size
    assert decoded.shape == images.shape and float(decoded.abs().max()) <= 1
    reconstructed, loss, same = codebook.reconstruct(images)
    assert torch.equal(same, indices) and reconstructed.shape == images.shape and float(loss) >= 0


def test_codebook_usage_is_one_entry_for_a_constant_grid_and_all_of_them_for_a_uniform_one():
    assert codebook_usage(torch.zeros(4, 8, 8, dtype=torch.long), 16) == {"codes_used": 1 / 16, "perplexity": 1.0}
    uniform = codebook_usage(torch.arange(64).remainder(16).view(1, 8, 8), 16)
    assert uniform["codes_used"] == 1.0 and uniform["perplexity"] == pytest.approx(16.0)


def test_unused_codes_restart_on_encoder_outputs():
    torch.manual_seed(0)
    codebook = VisualCodebook(1, 32, TINY)
    before = codebook.codes.detach().clone()
    unused = torch.zeros(TINY.codebook_size, dtype=torch.bool)
    unused[[1, 5]] = True
    moved = codebook.restart_codes(unused, torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert moved == 2
    changed = (codebook.codes.detach() != before).any(1)
    assert changed.tolist() == unused.tolist()


def test_prompt_tokens_cover_every_word_of_a_grammar_prompt_and_find_its_terms(head):
    tokens = PromptTokens.for_vocabulary(head, "generate the image of this prompt")
    prompt = make_prompt("Findings: acute haematoma of the left occipital lobe. No oedema.", head)
    assert prompt.text == "haemorrhage in the left occipital lobe; no oedema"
    ids = tokens.ids(prompt.text)
    assert UNKNOWN not in ids and len(ids) == len(words_of(prompt.text)) == 9
    assert tokens.ids("haemorrhage zebra") [1] == UNKNOWN
    assert prompt_terms(prompt) == ["haemorrhage", "left occipital lobe"]
    assert term_span(words_of(prompt.text), "left occipital lobe") == (3, 6)
    rows, masks = tokens.padded([prompt.text], 12)
    assert rows[0][9:] == [PAD] * 3 and masks[0] == [True] * 9 + [False] * 3
    content = {tokens.words[i - 5] for i in tokens.content_ids()}
    assert {"haemorrhage", "left", "occipital", "lobe", "oedema"} <= content and not {"in", "the", ";"} & content


def test_the_alignment_scores_stated_words_only_not_those_of_a_no_clause(head):
    tokens = PromptTokens.for_vocabulary(head, TINY.instruction)
    alignment = WordPatchAlignment(tokens.size, 4, 4, 16, tokens.content_ids(), *tokens.ids("no ;"))
    text = "haemorrhage in the left occipital lobe; no oedema; mass"
    negated = alignment.negated(torch.tensor([tokens.ids(text)]))[0].tolist()
    assert [word for word, no in zip(words_of(text), negated) if no] == [";", "no", "oedema"]


def test_the_alignment_ranks_a_planted_patch_first_for_its_word_and_not_its_mirror_place():
    """Images are random codes, except that an image whose prompt says "mass" has code 3 at
    position 10, and its mirror (code 3 at position 9, the place position 10 mirrors onto) is
    background at 10 and code 3 at 9: trained contrastively, "mass" must peak at patch 10 of a new
    image, not at its equally asymmetric mirror place 9, and its first key patch (chosen with no
    image) must be code 3 (its position is not identifiable here: code 3 is only ever seen at
    position 10, and background codes are seen there too)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    codebook = torch.randn(8, 4, generator=generator)
    words = {"mass": 5, "normal": 6, "brain": 7}
    alignment = WordPatchAlignment(8, 4, 4, 32, {5, 6, 7})

    def grids(count: int, has_mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own = torch.randint(0, 3, (count, 16), generator=generator)  # codes 0-2: background
        mirrored = own.clone()
        mirrored[has_mass, 9] = 3
        own[has_mass, 10] = 3
        return (codebook[g].permute(0, 2, 1).reshape(count, 4, 4, 4) for g in (own, mirrored))

    alignment.learn_typical(next(iter(grids(64, torch.zeros(64, dtype=torch.bool)))))
    optimizer = torch.optim.Adam(alignment.parameters(), lr=3e-3)
    for _ in range(150):
        has_mass = torch.arange(16) % 2 == 0
        tokens = torch.tensor([[words["mass"], words["brain"]] if m else [words["normal"], words["brain"]]
                               for m in has_mass])
        codes, mirrored = grids(16, has_mass)
        loss = alignment.loss(tokens, torch.ones_like(tokens, dtype=torch.bool), codes, mirrored,
                              typical_mirror=torch.rand(16, generator=generator) < 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    codes, mirrored = grids(1, torch.ones(1, dtype=torch.bool))
    with torch.no_grad():
        vectors = alignment.word_vectors(torch.tensor([[5, 7]]), torch.ones(1, 2, dtype=torch.bool))[0]
        mass = alignment.term_vector(vectors, (0, 1))
        similarities = heat_map(alignment, mass, codes[0], mirrored[0])
        assert int(similarities.flatten().argmax()) == 10
        ((_, code),) = key_patches(alignment, mass, codebook, 1)
        assert code == 3


def test_the_saliency_prior_marks_the_patch_unlike_both_its_mirror_and_the_typical_entry():
    alignment = WordPatchAlignment(8, 2, 2, 8, {5})
    typical = torch.zeros(1, 2, 2, 2)
    alignment.learn_typical(typical)
    codes = torch.zeros(1, 2, 2, 2)
    codes[0, :, 0, 1] = torch.tensor([3.0, 4.0])  # a lesion at patch 1: far from its mirror and the typical entry
    codes[0, :, 1, 0] = torch.tensor([0.6, 0.8])  # an outline at patch 2, the same in the mirror
    mirrored = codes.clone()
    mirrored[0, :, 0, 1] = 0
    saliency = alignment.patch_saliency(codes, mirrored)[0]
    assert int(saliency.argmax()) == 1
    distances = torch.tensor([0.0, 5.0, 0.0, 0.0])  # the outline is typical-far but mirror-near: 0
    assert torch.allclose(saliency, (distances - distances.mean()) / distances.std())


def test_a_stopped_codebook_phase_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, head):
    images = torch.rand(10, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    tokens = PromptTokens.for_vocabulary(head, TINY.instruction)

    def model():
        torch.manual_seed(0)
        return VQAutoregressive("text", "ct", 1, 32, tokens, TINY)

    def train(folder, stop_at=None):
        built = model()
        optimizer = torch.optim.Adam(built.codebook.parameters(), lr=1e-3, betas=(0.5, 0.9))
        step = codebook_step(built, images, optimizer, torch.device("cpu"))

        def stopping(index, generator):
            if index == stop_at:
                raise KeyboardInterrupt
            return step(index, generator)

        train_phase("codebook", built.codebook, optimizer, TINY.codebook_steps, stopping, folder, seed=4,
                    checkpoint_every=2, label="test")
        return built

    straight = train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "stopped", stop_at=5)  # after the checkpoint at step 4, a restart at 3 and the critic from 2
    assert (tmp_path / "stopped" / "codebook-state.safetensors").is_file()
    resumed = train(tmp_path / "stopped")
    for (name, a), b in zip(straight.codebook.state_dict().items(), resumed.codebook.state_dict().values()):
        assert torch.equal(a, b), name
    assert not (tmp_path / "stopped" / "codebook-state.safetensors").exists()
    history = [line for line in (tmp_path / "stopped" / "codebook-history.jsonl").read_text().splitlines() if line]
    assert len(history) == TINY.codebook_steps


def test_transformer_sampling_is_reproducible_per_row_and_stays_in_the_codebook(head):
    tokens = PromptTokens.for_vocabulary(head, TINY.instruction)
    torch.manual_seed(0)
    model = VQAutoregressive("text", "ct", 1, 32, tokens, TINY).eval()
    reports = ("Haemorrhage in the right frontal lobe.", "Normal brain.")
    conditions = [model.prompt_condition(r, RunPrompts(head)) for r in reports]
    assert len(conditions[0].keys) == 2 * TINY.key_patches  # two terms, key_patches pairs each
    assert model.prompt_conditions(reports, RunPrompts(head)) == conditions  # the batch form: the same keys
    ids, masks = model.conditioning(conditions, "cpu")
    assert ids.shape == masks.shape == (2, model.transformer.condition_length)

    def draw(rows, seeds):
        return model.transformer.sample(ids[rows], masks[rows], [torch.Generator().manual_seed(s) for s in seeds],
                                        top_k=8, temperature=1.0)

    both = draw([0, 1], [11, 12])
    assert both.shape == (2, 64) and int(both.max()) < TINY.codebook_size
    assert torch.equal(draw([0, 1], [11, 12]), both)
    assert torch.equal(draw([1], [12])[0], both[1])  # a row alone, from its seed, is the same row
    assert not torch.equal(draw([0], [13])[0], both[0])


def test_a_transformer_step_under_bf16_autocast_runs_the_forward_in_bf16_and_keeps_fp32_weights(head):
    tokens = PromptTokens.for_vocabulary(head, TINY.instruction)
    torch.manual_seed(0)
    model = VQAutoregressive("text", "ct", 1, 32, tokens, TINY)
    condition = model.prompt_condition("Haemorrhage in the right frontal lobe.", RunPrompts(head))
    ids, masks = model.conditioning([condition] * 4, "cpu")
    images = torch.randint(0, TINY.codebook_size, (4, 64))
    seen = []
    hook = model.transformer.model.register_forward_hook(lambda module, inputs, out: seen.append(out.logits.dtype))
    optimizer = torch.optim.Adam(model.transformer.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.transformer.parameters()]
    step = transformer_step(model, ids, masks, images, optimizer, torch.device("cpu"),
                            lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    logs = step(0, torch.Generator().manual_seed(0))
    hook.remove()
    assert seen == [torch.bfloat16] and torch.isfinite(torch.tensor(logs["loss"]))
    assert all(p.dtype == torch.float32 for p in model.transformer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.transformer.parameters()))
