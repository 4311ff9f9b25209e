"""Caption metrics (pycocoevalcap) against independently known values."""

import pytest

from sar_pipeline.captioning.metrics import (
    METRIC_NAMES,
    PAPER_BLIP_RSICD_UCM,
    compute_caption_metrics,
    metrics_markdown_table,
)

# Papineni et al. 2002 (BLEU), example 1, as tokenised in NLTK's bleu_score documentation,
# where sentence_bleu(references, hypothesis1) = 0.5045666840058485.
HYPOTHESIS = "It is a guide to action which ensures that the military always obeys the commands of the party"
REFERENCES = [
    "It is a guide to action that ensures that the military will forever heed Party commands",
    "It is the guiding principle which guarantees the military forces always being under the command of the Party",
    "It is the practical guide for the army always to heed the directions of the party",
]


def test_identical_candidates_score_perfectly():
    refs = {
        "a": ["a river crossing fields"],
        "b": ["many buildings near a road"],
        "c": ["a dense green forest near hills"],
    }
    scores = compute_caption_metrics({k: v[0] for k, v in refs.items()}, refs)
    assert list(scores) == list(METRIC_NAMES)
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6), name
    # CIDEr-D is scaled by 10; every caption has 4-grams, else that n contributes 0
    assert scores["CIDEr"] == pytest.approx(10.0)


def test_bleu_matches_the_published_worked_example():
    scores = compute_caption_metrics({"1": HYPOTHESIS}, {"1": REFERENCES}, tokenize=False, meteor=False)
    assert scores["BLEU-4"] == pytest.approx(0.5045666840058485, abs=1e-8)


def test_modified_unigram_precision_of_the_bleu_paper():
    # BLEU paper §2.1: "the the the the the the the" against the two references → 2/7
    scores = compute_caption_metrics(
        {"1": "the the the the the the the"},
        {"1": ["The cat is on the mat.", "There is a cat on the mat."]},
        meteor=False,
    )
    assert scores["BLEU-1"] == pytest.approx(2 / 7, abs=1e-8)


def test_worse_captions_score_lower_and_table_layout():
    refs = {"a": ["a river crossing fields with a village"], "b": ["a large forest with a lake"]}
    good = compute_caption_metrics({"a": "a river crossing fields", "b": "a forest with a lake"}, refs)
    bad = compute_caption_metrics({"a": "a lake", "b": "many buildings"}, refs, meteor=False)  # one JVM less
    for name in ("BLEU-1", "ROUGE-L", "CIDEr"):
        assert good[name] > bad[name]
    assert 0.2 < good["METEOR"] < 1.0
    table = metrics_markdown_table(good, test_set="ucm test")
    lines = table.splitlines()
    assert lines[0] == "| Method | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr | METEOR | ROUGE-L |"
    assert (
        lines[2]
        == "| Paper: BLIP-RSICD+UCM (RSICD test) | 0.8029 | 0.6941 | 0.6061 | 0.5336 | 2.7239 | 0.4208 | 0.7178 |"
    )
    assert lines[3].startswith(f"| Ours (this run) | {good['BLEU-1']:.4f} |")
    assert PAPER_BLIP_RSICD_UCM["CIDEr"] == 2.7239


def test_mismatched_images_are_an_error():
    from sar_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="different images"):
        compute_caption_metrics({"a": "x"}, {"b": ["x"]})


def test_tokenisation_equals_pycocoevalcaps_wrapper():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from sar_pipeline.captioning.metrics import _ptb_tokenize

    captions = {
        "a": ["Many planes are parked, next to a building .", "It's (a) test!"],
        "b": ["Two  rivers ; a bridge"],
    }
    expected = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    assert _ptb_tokenize(captions) == expected


def test_line_breaks_inside_a_caption_do_not_shift_the_others():
    from sar_pipeline.captioning.metrics import _ptb_tokenize

    captions = {"a": ["one\rcaption", "two\u2028captions"], "b": ["the last one"]}
    assert _ptb_tokenize(captions) == {"a": ["one caption", "two captions"], "b": ["the last one"]}
