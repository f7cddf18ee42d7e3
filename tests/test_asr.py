"""The CER of the synthetic-speech filter (salad_ray.asr): normalised, summed over a sample's spans."""

from __future__ import annotations

import pytest

from salad_ray.asr import cer, normalize_for_cer


def test_normalisation_ignores_case_punctuation_accents_and_spacing():
    assert normalize_for_cer("  Café,  NAÏVE -- résumé! ") == "cafe naive resume"


@pytest.mark.parametrize(
    ("said", "heard", "expected"),
    [
        (["hello world"], ["Hello, world."], 0.0),
        (["hello world"], ["hallo world"], 1 / 11),  # one substitution
        (["kitten"], ["sitting"], 3 / 6),  # the textbook Levenshtein pair: 3 edits
        (["abc"], [""], 1.0),  # everything deleted
        (["ab", "cd"], ["ab", "xd"], 1 / 4),  # total edits over total reference characters
        ([""], ["noise"], 5.0),  # nothing to say: every heard character is an edit (reference length 1)
    ],
)
def test_cer_is_total_edits_over_total_reference_characters(said, heard, expected):
    assert cer(said, heard) == pytest.approx(expected)
