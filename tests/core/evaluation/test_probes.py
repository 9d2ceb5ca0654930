"""The condition probe: recovers a label planted in embeddings, and scores chance on shuffled labels."""

import torch

from medm2g.core.evaluation.probes import fit_linear_probe, format_ladder, probe_scores


def _embeddings(n: int, generator: torch.Generator, strength: float):
    """Embeddings nearly constant (cosine ~0.9 to each other, as C_text's were) with the side in one
    small direction: the case where a pooled condition hides its finding."""
    labels = ["left" if bit else "right" for bit in torch.randint(0, 2, (n,), generator=generator).tolist()]
    common = torch.randn(64, generator=generator) * 3
    noise = torch.randn(n, 64, generator=generator)
    planted = torch.tensor([1.0 if label == "left" else -1.0 for label in labels])
    noise[:, 7] += strength * planted
    return common + noise, labels


def test_a_probe_recovers_a_side_planted_in_a_small_direction():
    generator = torch.Generator().manual_seed(0)
    train, train_labels = _embeddings(300, generator, strength=2.5)
    test, test_labels = _embeddings(200, generator, strength=2.5)
    cosine = torch.nn.functional.cosine_similarity(test[:1], test[1:]).mean()
    assert cosine > 0.8  # every embedding close to every other
    scores = probe_scores(train, train_labels, test, test_labels)
    assert scores["accuracy"] >= 0.9 and scores["accuracy_low"] > 0.85 and scores["accuracy_n"] == 200
    assert 0.35 <= scores["chance"] <= 0.65


def test_a_probe_scores_chance_on_shuffled_labels():
    generator = torch.Generator().manual_seed(1)
    train, train_labels = _embeddings(300, generator, strength=2.5)
    test, test_labels = _embeddings(200, generator, strength=2.5)
    shuffled = [train_labels[i] for i in torch.randperm(len(train_labels), generator=generator).tolist()]
    scores = probe_scores(train, shuffled, test, test_labels)
    assert scores["accuracy_low"] < 0.5 < scores["accuracy_high"] or abs(scores["accuracy"] - 0.5) < 0.1


def test_a_probe_of_three_classes_predicts_their_names_and_one_class_needs_no_fitting():
    generator = torch.Generator().manual_seed(2)
    centres = {"frontal": torch.randn(16, generator=generator) * 3, "parietal": torch.randn(16, generator=generator) * 3,
               "occipital": torch.randn(16, generator=generator) * 3}
    labels = [list(centres)[i % 3] for i in range(90)]
    features = torch.stack([centres[label] + torch.randn(16, generator=generator) for label in labels])
    probe = fit_linear_probe(features, labels)
    assert probe.classes == ("frontal", "occipital", "parietal")
    assert sum(p == t for p, t in zip(probe.predict(features), labels)) / 90 > 0.95
    assert fit_linear_probe(features[:5], ["frontal"] * 5).predict(features[:2]) == ["frontal", "frontal"]


def test_the_ladder_table_shows_each_rung_with_n_interval_and_chance():
    side = {"accuracy": 0.9, "accuracy_low": 0.8, "accuracy_high": 0.95, "accuracy_n": 100, "chance": 0.5}
    reader = {"side_accuracy": 0.7, "side_accuracy_low": 0.6, "side_accuracy_high": 0.78, "side_accuracy_n": 100,
              "side_chance": 0.5}
    reconstructed = {**reader, "psnr": 21.56, "ssim": 0.708}
    table = format_ladder({"condition": {"text": {"side": side}}, "vae": {"ct": {"truth": reader, "vae": reconstructed}},
                           "oracle": {"ct": {**reader, "steps": 300}}, "generation": {"text -> ct": reader}})
    assert "| 1 condition | text | linear probe on frozen C_text | 100 | - | 0.90 [0.80, 0.95] (0.50) | - |" in table
    assert ("| 2 VAE | ct | reader on VAE reconstructions (PSNR 21.6 dB, SSIM 0.71: the fidelity ceiling) | 100 | - | "
            "0.70 [0.60, 0.78] (0.50) | - |") in table
    assert "| 3 oracle | ct | reader on an LDM conditioned on the finding itself (300 steps) | 100 | - | 0.70" in table
    assert "| 4 generation | text -> ct | reader on generated images | 100 |" in table


def test_token_sequence_conditions_keep_their_shape_and_drop_whole_rows():
    from medm2g.core.diffusion.conditional import condition_context

    tokens = torch.randn(3, 5, 8)
    keep = torch.tensor([True, False, True])
    context = condition_context(tokens, keep)
    assert context.shape == (3, 5, 8)
    assert torch.equal(context[0], tokens[0]) and not context[1].any() and torch.equal(context[2], tokens[2])
    assert condition_context(torch.randn(3, 8), keep).shape == (3, 1, 8)  # a pooled embedding is one token


def test_an_oracle_condition_is_one_token_per_finding_field_with_room_for_the_unseen():
    from medm2g.core.evaluation.oracle import FindingTokens
    from medm2g.core.phantom.anatomy import Finding

    seen = [Finding("haemorrhage", "left", "frontal"), Finding("infarct", "right", "occipital"), Finding("normal")]
    tokens = FindingTokens(seen, width=16)
    assert tokens.values["side"] == ["left", "none", "right"]
    out = tokens([seen[0], seen[2], Finding("tumour", "left", "temporal")])
    assert out.shape == (3, 3, 16)
    assert torch.equal(out[0, 1], out[2, 1])  # both left
    assert not torch.equal(out[0, 1], out[1, 1])  # left and none differ
    unseen = tokens.tables["kind"].weight[len(tokens.values["kind"])]
    assert torch.equal(out[2, 0], unseen)  # a type never seen in training gets the spare row
