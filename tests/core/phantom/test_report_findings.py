"""Reading findings back from phantom reports: exact on the truth, at chance when shuffled."""

import torch

from medm2g.core.phantom.anatomy import Finding
from medm2g.core.phantom.report_findings import ReportFinding, finding_agreement, read_report_finding
from medm2g.plugins.text.phantom import report


def _findings(count: int):
    kinds = ("haemorrhage", "infarct", "tumour", "calcification", "normal")
    for i in range(count):
        kind = kinds[i % 5]
        if kind == "normal":
            yield Finding("normal")
        else:
            yield Finding(kind, ("left", "right")[i % 2], ("frontal", "parietal", "temporal", "occipital")[i % 4],
                          20.0 + i % 17, (0.0, 0.0, 0.0))


def test_every_phrasing_of_a_phantom_report_reads_back_as_its_finding():
    generator = torch.Generator().manual_seed(0)
    for finding in _findings(60):
        text = report(finding, generator)
        expected = (ReportFinding("normal", "none", "none") if finding.is_normal
                    else ReportFinding(finding.kind, finding.side, finding.region))
        assert read_report_finding(text) == expected, text


def test_decoded_spacing_and_unknown_words_read_sensibly():
    assert read_report_finding("findings : right temporal lobe haemorrhage measuring approximately 29 mm. "
                               "impression : left temporal haemorrhage.") == ReportFinding("haemorrhage", "right",
                                                                                           "temporal")
    assert read_report_finding("Findings: No evidence of haemorrhage, infarct or mass.").kind == "normal"
    assert read_report_finding("Something else entirely.") == ReportFinding("unknown", "unknown", "unknown")


def test_the_truth_agrees_with_itself_and_a_shuffle_scores_near_its_chance_level():
    generator = torch.Generator().manual_seed(1)
    reports = [report(f, generator) for f in _findings(200)]
    perfect = finding_agreement(reports, reports)
    assert perfect["kind_accuracy"] == perfect["side_accuracy"] == perfect["region_accuracy"] == 1.0
    shuffled = [reports[i] for i in torch.randperm(len(reports), generator=generator).tolist()]
    scores = finding_agreement(shuffled, reports)
    for field in ("kind", "side", "region"):
        assert abs(scores[f"{field}_accuracy"] - scores[f"{field}_chance"]) < 0.1
    assert 0.15 < scores["kind_chance"] < 0.25  # five equally common kinds


def test_a_report_whose_impression_contradicts_its_findings_is_counted():
    from medm2g.core.phantom.report_findings import contradiction, contradiction_scores

    left = "Findings: There is a 12 mm haemorrhage in the left temporal lobe. Impression: {}"
    assert contradiction(left.format("Right temporal haemorrhage.")) is True
    assert contradiction(left.format("Left temporal acute infarct.")) is True  # another type
    assert contradiction(left.format("Left temporal haemorrhage.")) is False
    assert contradiction("Findings: A mass measuring 20 mm is seen in the right frontal lobe. "
                         "Impression: Right frontal mass, likely tumour.") is False  # mass and tumour are one type
    assert contradiction("Findings: No focal lesion is identified. Impression: Normal brain.") is False
    assert contradiction("Findings: an odd shadow.") is None  # no impression: not judged
    scores = contradiction_scores([left.format("Right temporal haemorrhage."), left.format("Left temporal haemorrhage."),
                                   "no impression here"])
    assert scores["contradiction"] == 0.5 and scores["contradiction_n"] == 2
    assert contradiction_scores(["nothing"]) == {}
