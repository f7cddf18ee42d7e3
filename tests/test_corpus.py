import json

import pytest

from salad_ray.config import TextSource
from salad_ray.corpus import normalize_text, read_texts, sample_across_domains, text_id


def test_normalize_and_ids():
    assert normalize_text("  Hello\n\tworld\u00a0again ") == "Hello world again"
    assert text_id("a b") == text_id(normalize_text(" a  b ")) != text_id("a c")


def test_fortunes_are_domain_labelled_prose():
    records = list(
        read_texts(TextSource(kind="fortunes", categories=["science", "food"], min_words=5, max_words=40))
    )
    assert {r.domain for r in records} == {"science", "food"}
    assert all(5 <= len(r.text.split()) <= 40 for r in records)
    assert len({r.text_id for r in records}) == len(records)
    with pytest.raises(ValueError, match="unknown fortunes categories"):
        list(read_texts(TextSource(kind="fortunes", categories=["nope"])))


def test_sampling_spreads_over_domains_deterministically():
    records = list(read_texts(TextSource(kind="fortunes", min_words=8, max_words=40)))
    picked = sample_across_domains(records, 30, seed=0)
    assert len(picked) == 30 and len({r.domain for r in picked}) == 30  # more domains than samples
    assert picked == sample_across_domains(records, 30, seed=0)
    assert picked != sample_across_domains(records, 30, seed=1)


def test_jsonl_source(tmp_path):
    f = tmp_path / "t.jsonl"
    rows = [{"text": "one two three four five six seven eight nine", "topic": "a"}, {"text": "short"}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    records = list(read_texts(TextSource(kind="jsonl", path=str(f), domain_field="topic")))
    assert [r.domain for r in records] == ["a"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}))
    with pytest.raises(KeyError, match=r"bad\.jsonl:1: no field 'text'"):
        list(read_texts(TextSource(kind="jsonl", path=str(bad))))
