import json
import re

import pytest

from salad_ray.config import TextSource
from salad_ray.corpus import (
    TextRejected,
    check_text,
    normalize_text,
    raw_texts,
    read_texts,
    sample_across_domains,
    text_id,
)


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


def test_jsonl_source_reads_what_it_can_and_names_what_it_cannot(tmp_path):
    f = tmp_path / "t.jsonl"
    lines = [
        json.dumps({"text": "one two three four five six seven eight nine", "topic": "a"}).encode(),
        json.dumps({"text": "short"}).encode(),
        b'{"text": "caf\xe9 bytes that are not utf-8 at all"}',
        b"{not json",
        json.dumps({"body": "no text field"}).encode(),
    ]
    f.write_bytes(b"\n".join(lines))
    source = TextSource(kind="jsonl", path=str(f), domain_field="topic")
    assert [r.domain for r in read_texts(source)] == ["a"]  # choosing texts: only usable prose
    raw = list(raw_texts(source))  # the pipeline sees every record
    assert len(raw) == 5
    assert raw[2].problem is None and isinstance(raw[2].value, bytes)
    with pytest.raises(TextRejected, match="not valid UTF-8"):
        check_text(raw[2].value, 2, 100)
    assert "t.jsonl:4: not valid JSON" in raw[3].problem
    assert "t.jsonl:5: no field 'text'" in raw[4].problem
    assert len({r.text_id for r in raw}) == 5


def test_check_text_reasons():
    assert check_text("  a\x00b  c ", 2, 10) == "a b c"
    for raw, reason in [
        ("   \n\t ", "empty"),
        ("one", "too short"),
        ("w " * 11, "over-long text: 11 words > 10"),
        (3, "not a string"),
    ]:
        with pytest.raises(TextRejected, match=reason):
            check_text(raw, 2, 10)


def test_gcide_quotations():
    records = list(read_texts(TextSource(kind="gcide", min_words=8, max_words=40, limit=50)))
    assert len(records) == 50 and {r.domain for r in records} == {"gcide"}
    assert not any(re.search(r"--\S", r.text) or "[1913" in r.text for r in records)  # attributions cut


def test_heldout_only_domains_are_held_out_and_never_trained_on(tmp_path, monkeypatch):
    """data.heldout_only: the held-out set has its own samples of the domain; the natural stand-in,
    the text set and the pool (so its probes) read without it."""
    import salad_ray.pool
    from salad_ray.config import load_config
    from salad_ray.corpus import heldout_records
    from salad_ray.run import Driver

    config = load_config(
        "smoke",
        overrides=[
            "data.heldout_only=[medicine]",
            "data.natural_standin.text.categories=[computers, medicine]",
            "data.pool.categories=[medicine, science]",
            "data.text={kind: fortunes, categories: [food, medicine], min_words: 8, max_words: 40, limit: 30}",
        ],
    )
    held = heldout_records(config.data, config.seed)
    unseen = [r for r in held if r.domain == "medicine"]
    assert len(unseen) >= config.data.heldout.unseen_samples and len(held) > len(unseen)
    assert held == heldout_records(config.data, config.seed)  # deterministic

    driver, read = Driver(config, tmp_path), {}
    monkeypatch.setattr(
        driver, "_synthesize", lambda name, records, **_: read.setdefault(name, records) and ""
    )
    driver.build_natural()
    driver.build_text()
    for name in ("natural", "text"):
        assert read[name] and all(r.domain != "medicine" for r in read[name])

    class Stop(Exception):
        pass

    def pool_source(source, exclude_domains=()):
        records = list(read_texts(source, exclude_domains))
        read["pool"] = records
        raise Stop  # the embedding and clustering (Ray Data) are not what is tested here

    monkeypatch.setattr(salad_ray.pool, "read_texts", pool_source)
    with pytest.raises(Stop):
        salad_ray.pool.build_pool(config, tmp_path / "pool", exclude=set())
    assert {r.domain for r in read["pool"]} == {"science"}
    assert any(r.domain == "medicine" for r in read_texts(config.data.pool))  # what was left out
