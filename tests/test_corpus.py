import json
import re

import pytest

from salad_ray.accounting import PipelineReport, Reason
from salad_ray.config import TextSource
from salad_ray.corpus import (
    FORTUNES_DIR,
    Rejected,
    TextRecord,
    TextRejected,
    check_text,
    normalize_text,
    read_texts,
    sample_across_domains,
    screen_texts,
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
    screened = list(screen_texts(source))  # the pipelines see every record, and why it is refused
    assert isinstance(screened[0], TextRecord)
    refused = screened[1:]
    assert [r.refusal.reason for r in refused] == [
        Reason.TOO_SHORT,
        Reason.NOT_UTF8,
        Reason.UNPARSEABLE,
        Reason.NO_TEXT_FIELD,
    ]
    assert [r.record.origin for r in refused] == [f"{f}:{n}" for n in range(2, 6)]
    assert refused[1].record.value == lines[2]  # bytes that are not UTF-8 stay bytes
    assert refused[2].record.value == "{not json"
    assert len({r.text_id for r in screened}) == 5


def test_every_record_of_a_hostile_file_is_used_or_refused_with_a_reason(adversarial_jsonl):
    """One result per line, in order; each refused record keeps its value as read and its line."""
    path, as_read = adversarial_jsonl
    source = TextSource(kind="jsonl", path=str(path), domain_field="topic")
    screened = list(screen_texts(source, exclude_domains=["medicine"]))
    assert len(screened) == len(as_read)
    reasons = [r.refusal.reason if isinstance(r, Rejected) else "used" for r in screened]
    assert reasons == [
        Reason.EMPTY,
        Reason.EMPTY,
        "used",  # NUL (escaped in the JSON) dropped by normalisation
        Reason.UNPARSEABLE,  # a raw NUL byte is not valid JSON
        Reason.OVER_LONG_WORD,
        Reason.OVER_LONG,
        Reason.NOT_PROSE,  # emoji
        "used",  # Arabic is letters
        Reason.NOT_PROSE,  # digits
        Reason.MARKUP,
        Reason.NOT_PROSE,  # a shell command
        "used",  # zero-width spaces dropped
        Reason.UNPARSEABLE,  # truncated
        Reason.NOT_UTF8,
        Reason.NO_TEXT_FIELD,
        Reason.NOT_A_STRING,
        Reason.HELDOUT_ONLY_DOMAIN,
        "used",
        "used",
        "used",
        Reason.DUPLICATE,
    ]
    for n, (record, value) in enumerate(zip(screened, as_read, strict=True), 1):
        if isinstance(record, Rejected):
            assert record.record.value == value and record.record.origin == f"{path}:{n}"
    used = [r for r in screened if isinstance(r, TextRecord)]
    assert used[0].text == "The keeper lit the lamp at dusk and watched the sea all night."
    assert used[2].text == "The old keeper rowed out to the wreck and brought back two sailors."
    assert [r.text for r in read_texts(source, ["medicine"])] == [r.text for r in used]
    # the stand-in also holds out the held-out texts: skipped as such, not as duplicates
    held = list(screen_texts(source, ["medicine"], exclude_ids={used[3].text_id}))
    assert [r.refusal.reason for r in held if isinstance(r, Rejected)].count(Reason.HELDOUT_TEXT) == 2


def test_fortunes_and_gcide_yield_one_result_per_entry():
    source = TextSource(kind="fortunes", categories=["science"], min_words=8, max_words=40)
    screened = list(screen_texts(source))
    entries = (FORTUNES_DIR / "science").read_bytes().removesuffix(b"\n%\n").split(b"\n%\n")
    assert len(screened) == len(entries)
    for n, r in enumerate(screened, 1):
        if isinstance(r, Rejected):
            assert r.record.origin == f"{FORTUNES_DIR / 'science'} #{n}"
    gcide = list(screen_texts(TextSource(kind="gcide", min_words=8, max_words=40, limit=5)))
    assert sum(isinstance(r, TextRecord) for r in gcide) == 5
    assert Reason.NOT_A_QUOTATION in {r.refusal.reason for r in gcide if isinstance(r, Rejected)}
    assert Reason.NOT_A_QUOTATION.skips and not Reason.NOT_PROSE.skips  # counted, not quarantined


def test_check_text_reasons():
    assert check_text("  a\x00b  c ", 2, 10) == "a b c"
    for raw, reason in [
        ("   \n\t ", "empty"),
        ("one", "too short"),
        ("w " * 11, "over-long text: 11 words > 10"),
        (3, "not a string"),
        ("a " + "b" * 65, "over-long word: 65 characters > 64"),
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
    from salad_ray.driver import Driver
    from salad_ray.rundir import RunDir

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

    driver, read = Driver(config, RunDir(tmp_path)), {}
    monkeypatch.setattr(
        driver,
        "_synthesize",
        lambda name, records, **_: read.setdefault(name, records) and PipelineReport(name),
    )
    driver.build_natural()
    driver.build_text()
    for name in ("natural", "text"):
        used = [r for r in read[name] if isinstance(r, TextRecord)]
        assert used and all(r.domain != "medicine" for r in used)
        assert all(
            r.refusal.reason == Reason.HELDOUT_ONLY_DOMAIN
            for r in read[name]
            if r not in used and r.record.domain == "medicine"
        )

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
