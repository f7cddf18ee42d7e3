"""The pipeline's stage classes and the shard store, called directly (no Ray)."""

import time

import numpy as np
import pandas as pd
import pytest

from salad_ray.accounting import Reason
from salad_ray.audio import SAMPLE_RATE, encode_flac, read_audio
from salad_ray.config import InterleaveConfig, ModelRef, TextSource, TTSConfig
from salad_ray.corpus import screen_texts
from salad_ray.pipeline.dataflow import JOB_COLUMNS, StageChain, skipped_jobs, text_jobs
from salad_ray.pipeline.records import DONE, OK, quarantine_table, refuse, shard_table
from salad_ray.pipeline.shards import ShardStore
from salad_ray.pipeline.stages import ASRCheckStage, NaturalStage, PlanStage, ShardWriter, TTSStage

LLM = ModelRef(source="asset:smollm2-135m-instruct")
GOOD = "The old lighthouse keeper climbed the stairs every evening to light the lamp for passing ships."
INTERLEAVE = InterleaveConfig(text_words=(4, 6), speech_words=(3, 5), max_tokens=64)


def job(n, raw, voice="en-us"):
    row = dict.fromkeys(JOB_COLUMNS, "")
    row.update(
        sample_id=f"s{n}",
        text_id=f"t{n}",
        raw=raw,
        origin=f"t.jsonl:{n + 1}",
        voice=voice,
        cluster=-1,
        source="active",
        status=OK,
    )
    return row


@pytest.fixture(scope="module")
def planned():
    plan = PlanStage(LLM, INTERLEAVE, seed=0, min_words=2, max_words=30)
    rows = [
        job(0, GOOD),
        job(1, "   \n\t "),
        job(2, b"caf\xe9 au lait with bytes that are not UTF-8"),
        job(3, " ".join(["word"] * 31)),
        job(4, "hello"),
        refuse(job(5, "{not json"), "read", Reason.UNPARSEABLE, "Expecting value"),  # refused as read
    ]
    return plan(pd.DataFrame(rows)).to_dict("records")


def test_plan_refuses_bad_texts_with_reasons(planned):
    reasons = [r["status"] for r in planned]
    assert reasons == [
        OK,
        Reason.EMPTY,
        Reason.NOT_UTF8,
        Reason.OVER_LONG,
        Reason.TOO_SHORT,
        Reason.UNPARSEABLE,
    ]
    assert planned[3]["detail"] == "31 words > 30" and planned[4]["detail"] == "1 words < 2"
    assert all(r["stage"] == "plan" for r in planned[1:5])
    assert planned[5]["stage"] == "read"  # refused rows pass through untouched
    good = planned[0]
    assert good["text"] == GOOD and good["speech_texts"] and good["token_ids"][0] == 1  # BOS
    assert any(s["speech"] for s in good["spans"]) and good["spans"][-1]["end"] == len(good["token_ids"])


def test_quarantine_keeps_the_record_as_read(planned):
    """The raw value, never the text a stage made of it, nor a missing one read as NaN."""
    late = dict(planned[0], sample_id="late", text=float("nan"))  # refused before it had a text
    refuse(late, "tts", Reason.SYNTHESIS, "voice not found")
    table = quarantine_table([*planned[1:], late]).to_pylist()
    by_id = {r["sample_id"]: r for r in table}
    assert by_id["s1"]["text"] == "   \n\t " and by_id["s1"]["raw_bytes"] is None
    assert by_id["s2"]["raw_bytes"] == b"caf\xe9 au lait with bytes that are not UTF-8"
    assert by_id["s2"]["text"] == "caf\ufffd au lait with bytes that are not UTF-8"
    assert by_id["s3"]["text"] == " ".join(["word"] * 31)  # whole, not cut
    assert (
        by_id["s3"]["reason_kind"] == "over-long text"
        and by_id["s3"]["reason"] == "over-long text: 31 words > 30"
    )
    assert by_id["s5"]["text"] == "{not json" and by_id["s5"]["origin"] == "t.jsonl:6"
    assert by_id["s5"]["stage"] == "read" and by_id["s5"]["reason_kind"] == Reason.UNPARSEABLE
    assert by_id["late"]["text"] == GOOD and by_id["late"]["stage"] == "tts"
    assert by_id["late"]["reason"] == "synthesis failed: voice not found"
    assert not any(r["text"] == "nan" for r in table)


def test_text_pipeline_accounts_for_every_record_of_a_hostile_file(tmp_path, adversarial_jsonl, smoke_config):
    """The text pipeline's reading and stages without Ray or a teacher (top-k made up): every line is
    written, quarantined with its value as read and its line, or skipped; the report adds up."""
    path, as_read = adversarial_jsonl
    source = TextSource(kind="jsonl", path=str(path), domain_field="topic")
    jobs = text_jobs(screen_texts(source, ["medicine"]), smoke_config, voices=[], source="text")
    assert len(jobs) == len(as_read)
    skipped = skipped_jobs(jobs)
    plan = PlanStage(LLM, INTERLEAVE, seed=0, min_words=2, max_words=400, speech=False)
    rows = plan(jobs[~skipped]).to_dict("records")
    for row in rows:
        if row["status"] == OK:
            row["teacher_ids"] = [[-1]] + [[3]] * (len(row["token_ids"]) - 1)
            row["teacher_logprobs"] = [[0.0]] * len(row["token_ids"])
    store = ShardStore(tmp_path / "store")
    manifest = ShardWriter(str(store.root))(pd.DataFrame(rows))
    store.commit(manifest[["kind", "file", "sample_id"]].itertuples(index=False, name=None))
    written, quarantine = store.table(), store.table("quarantine").to_pylist()
    assert written.num_rows == 6 and int(skipped.sum()) == 2  # a held-out-only domain, a duplicate
    assert written.num_rows + len(quarantine) + int(skipped.sum()) == len(as_read)
    by_line = {int(q["origin"].rsplit(":", 1)[1]): q for q in quarantine}
    assert len(by_line) == len(quarantine) == 13
    for line, q in by_line.items():
        value = as_read[line - 1]
        if isinstance(value, bytes):
            assert q["raw_bytes"] == value and q["text"] == value.decode("utf-8", "replace")
        else:
            assert q["text"] == value and q["raw_bytes"] is None
        assert q["stage"] == "read" and q["reason"].startswith(q["reason_kind"])


def test_text_only_plan_is_one_text_span_cut_at_the_context():
    plan = PlanStage(LLM, InterleaveConfig(max_tokens=16), seed=0, min_words=2, max_words=400, speech=False)
    (row,) = plan(pd.DataFrame([job(0, GOOD + " " + GOOD)])).to_dict("records")
    assert row["status"] == OK and len(row["token_ids"]) == 16 and row["speech_texts"] == []
    assert row["spans"] == [{"start": 0, "end": 16, "speech": False}]
    assert GOOD.startswith(row["text"])


def test_tts_then_asr_keeps_intelligible_speech_and_refuses_the_rest(planned):
    tts = TTSStage(TTSConfig())
    asr = ASRCheckStage(ModelRef(source="asset:whisper-tiny-ct2"), max_cer=0.3)
    good = dict(planned[0])
    bad_voice = dict(planned[0], sample_id="v", voice="xx-nope")
    gibberish = dict(planned[0], sample_id="g", speech_texts=["qzx vbnm kjhg pwtr"])
    spoken = tts(pd.DataFrame([good, bad_voice, gibberish, planned[1]])).to_dict("records")
    assert spoken[0]["status"] == OK and len(spoken[0]["audio"]) == len(good["speech_texts"])
    assert spoken[0]["duration"] > 0.5 and spoken[0]["sample_rate"] == SAMPLE_RATE
    assert spoken[1]["status"] == Reason.SYNTHESIS and spoken[1]["stage"] == "tts"
    assert spoken[3]["status"] == planned[1]["status"]  # refused rows pass through untouched
    # a span Whisper cannot hear in one window (an untrained Kokoro's can run that long): refused
    long_wave = np.zeros(31 * SAMPLE_RATE, np.float32)
    too_long = dict(spoken[0], sample_id="l", audio=[spoken[0]["audio"][0], encode_flac(long_wave)])
    too_long["speech_texts"] = [good["speech_texts"][0], "silence"]
    checked = asr(pd.DataFrame([*spoken, too_long])).to_dict("records")
    assert checked[0]["status"] == OK and checked[0]["cer"] < 0.3
    assert checked[2]["status"] == Reason.ASR and checked[2]["detail"].startswith("CER")
    assert checked[2]["stage"] == "asr"
    assert checked[4]["status"] == Reason.ASR and "31.0 s span is longer than Whisper" in checked[4]["detail"]


def text_row(planned, n: int, token_ids: list[int], teacher_ids, teacher_logprobs) -> dict:
    """A writable shard row ``id<n>``: the first planned text as one text span of ``token_ids``, no
    audio, with the given teacher top-k."""
    return dict(
        planned[0],
        sample_id=f"id{n}",
        audio=[],
        duration=0.0,
        sample_rate=SAMPLE_RATE,
        token_ids=token_ids,
        spans=[{"start": 0, "end": len(token_ids), "speech": False}],
        teacher_ids=teacher_ids,
        teacher_logprobs=teacher_logprobs,
    )


def test_shard_store_commits_exactly_once_and_drops_orphans(tmp_path, planned):
    store = ShardStore(tmp_path)
    rows = [text_row(planned, n, [1], [[-1]], [[0.0]]) | {"duration": 1.5 + n} for n in range(3)]
    a = store.write(shard_table(rows[:2]), "shards")
    assert store.write(shard_table(rows[1::-1]), "shards") == a  # same ids, same file name
    orphan = store.write(shard_table(rows[2:]), "shards")  # written, never returned by a task
    assert store.commit([("shards", a, "id0"), ("shards", a, "id1")]) == {"shards": 2, "quarantine": 0}
    assert not (store.dir("shards") / orphan).exists()
    assert store.done_ids() == {"id0", "id1"} and store.table().num_rows == 2
    assert store.seconds() == 1.5 + 2.5  # the committed samples' speech, not the orphan's
    with pytest.raises(ValueError, match="committed twice"):
        store.commit([("shards", a, "id0")])
    assert not list(store.dir("shards").glob(".*.tmp"))  # no temporary files left behind


def test_writer_round_trips_samples(tmp_path, planned):
    row = dict(
        planned[0], audio=[encode_flac(np.zeros(1600, np.float32))], duration=0.1, sample_rate=SAMPLE_RATE
    )
    n = len(row["token_ids"])
    row["teacher_ids"] = [[-1, -1]] + [[3, 4]] * (n - 1)
    row["teacher_logprobs"] = [[0.0, 0.0]] + [[-0.3, -17.3]] * (n - 1)
    row["spans"] = [{"start": 0, "end": 2, "speech": True}, {"start": 2, "end": n, "speech": False}]
    refused = dict(planned[1])
    manifest = ShardWriter(str(tmp_path))(pd.DataFrame([row, refused]))
    assert sorted(manifest["kind"]) == ["quarantine", "shards"]
    store = ShardStore(tmp_path)
    assert list(manifest["teacher_retries"]) == [0, 0]
    store.commit(manifest[["kind", "file", "sample_id"]].itertuples(index=False, name=None))
    (sample,) = store.samples()
    assert sample.ids == row["token_ids"] and sample.teacher_ids.shape == (n, 2)
    # log-probs are stored as float16 and read back as float32: the nearest float16, no further off
    assert sample.teacher_logprobs.dtype == np.float32
    stored = np.float16(np.asarray(row["teacher_logprobs"])).astype(np.float32)
    np.testing.assert_array_equal(sample.teacher_logprobs, stored)
    assert np.abs(sample.teacher_logprobs[1] - [-0.3, -17.3]).max() <= 2**-6  # one step at |x| >= 16
    assert len(sample.audio) == 1 and len(sample.audio[0]) == 1600
    quarantine = store.table("quarantine").to_pylist()
    assert quarantine[0]["reason_kind"] == Reason.EMPTY and quarantine[0]["stage"] == "plan"
    assert quarantine[0]["text"] == "   \n\t " and quarantine[0]["origin"] == "t.jsonl:2"


@pytest.fixture(scope="module")
def recording(espeak):
    words = GOOD.split()
    pieces = espeak.synthesize(words, "en-us")
    times, t = [], 0.0
    for p in pieces:
        times.append([t, t + len(p) / SAMPLE_RATE])
        t += len(p) / SAMPLE_RATE
    return np.concatenate(pieces), times


def natural_row(audio, raw=GOOD, continuation=None, word_times=None):
    row = dict.fromkeys(JOB_COLUMNS, "")
    row.update(
        raw=raw,
        audio_in=audio,
        continuation=continuation,
        word_times=word_times,
        cluster=-1,
        source="natural",
        status=OK,
    )
    return row


def test_natural_speech_alignment_and_refusals(recording):
    wave, times = recording
    stage = NaturalStage(LLM, INTERLEAVE, settings={}, seed=0, max_seconds=60, max_words=100)
    flac = encode_flac(wave)
    rows = [
        natural_row({"bytes": flac}, word_times=times),
        natural_row(
            {"array": wave, "sampling_rate": SAMPLE_RATE},
            raw="a spoken first sentence",
            continuation="and the text that follows it",
        ),
        natural_row(flac),
        natural_row(b"not audio at all", continuation="x y"),
        natural_row(flac, word_times=times[:-1]),
    ]
    out = stage(pd.DataFrame(rows)).to_dict("records")
    assert out[0]["status"] == OK
    speech = [s for s in out[0]["spans"] if s["speech"]]
    assert len(out[0]["audio"]) == len(speech) and out[0]["duration"] < len(wave) / SAMPLE_RATE
    assert out[1]["status"] == OK and [s["speech"] for s in out[1]["spans"]] == [True, False]
    assert out[1]["text"] == "a spoken first sentence and the text that follows it"
    assert [r["status"] for r in out[2:]] == [
        Reason.NO_TEXT_AFTER_SPEECH,
        Reason.BAD_AUDIO,
        Reason.MISALIGNED,
    ]
    assert len({r["sample_id"] for r in out}) == 5
    # the same records again, with their ids committed: skipped, not redone
    again = NaturalStage(
        LLM,
        INTERLEAVE,
        settings={},
        seed=0,
        max_seconds=60,
        max_words=100,
        done=frozenset(r["sample_id"] for r in out),
    )
    assert {r["status"] for r in again(pd.DataFrame(rows)).to_dict("records")} == {DONE}


def test_the_asr_check_decodes_no_further_than_its_verdict_needs(planned):
    """Capped at check_tokens of the reference, speech that says the text is heard in full, and
    noise (what an untrained TTS makes) stops at the cap instead of Whisper's 224 tokens."""
    from salad_ray.asr import MAX_TOKENS, WhisperASR, check_tokens
    from salad_ray.assets import resolve

    asr = WhisperASR(resolve(ModelRef(source="asset:whisper-tiny-ct2")))
    spoken = TTSStage(TTSConfig())(pd.DataFrame([planned[0]])).to_dict("records")[0]
    text = spoken["speech_texts"][0]
    wave = read_audio(spoken["audio"][0])
    cap = check_tokens(asr.tokens(text))
    assert asr.transcribe([wave], max_tokens=cap) == asr.transcribe([wave])
    noise = np.random.default_rng(0).normal(0, 0.3, 20 * SAMPLE_RATE).astype(np.float32)
    heard = asr.transcribe([noise], max_tokens=check_tokens(2))[0]
    assert asr.tokens(heard) <= check_tokens(2) < MAX_TOKENS


def test_a_store_with_shards_from_before_float16_log_probs_reads_as_one_table(tmp_path, planned):
    """A pipeline cut short before the change and finished after it leaves float32 and float16 shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from salad_ray.pipeline.records import SHARD_SCHEMA

    store = ShardStore(tmp_path)
    rows = [text_row(planned, n, [1, 2], [[-1], [7]], [[0.0], [-0.25]]) for n in range(2)]
    new = store.write(shard_table(rows[:1]), "shards")
    old_schema = SHARD_SCHEMA.set(
        SHARD_SCHEMA.get_field_index("teacher_logprobs"),
        pa.field("teacher_logprobs", pa.list_(pa.list_(pa.float32()))),
    )
    old = "old.parquet"
    pq.write_table(shard_table(rows[1:]).cast(old_schema), store.dir("shards") / old)
    store.commit([("shards", new, "id0"), ("shards", old, "id1")])
    table = store.table()
    assert table.schema == SHARD_SCHEMA and table.num_rows == 2
    assert table.column("teacher_logprobs").to_pylist() == [[[0.0], [-0.25]]] * 2
    assert store.table(columns=["sample_id", "teacher_logprobs"]).num_rows == 2
    assert [s.teacher_logprobs.dtype for s in store.samples()] == [np.float32, np.float32]


def test_an_actor_that_speaks_and_checks_is_busy_for_its_whole_call(planned):
    """A fused actor's chain (speech, then its ASR check) records its TTS call from the chain's start
    to its end: the check is the actor's work, not time it sat idle (the report's idle share)."""

    class SpeakAndCheck(StageChain):
        def __init__(self):
            self.stages = [
                TTSStage(TTSConfig()),
                ASRCheckStage(ModelRef(source="asset:whisper-tiny-ct2"), max_cer=0.3),
            ]

    chain = SpeakAndCheck()
    batch = pd.DataFrame([planned[0], dict(planned[0], sample_id="s0b", voice="en-gb")])
    before = time.time()
    out = chain(batch)
    after = time.time()
    (start,), (end,) = out["tts_start"].dropna(), out["tts_end"].dropna()  # one call, on its first row
    assert before <= start < end <= after
    assert end - start >= (after - before) - 0.05
    alone = chain.stages[0](batch)  # the TTS stage by itself records only its own part
    assert alone["tts_end"].iloc[0] - alone["tts_start"].iloc[0] < end - start

    class Check(StageChain):  # a chain downstream of the TTS actor (TeachAndWrite's place)
        def __init__(self):
            self.stages = [ASRCheckStage(ModelRef(source="asset:whisper-tiny-ct2"), max_cer=0.3)]

    checked = Check()(alone.copy())  # it carries the TTS actor's call through, untouched
    assert list(checked["tts_start"].dropna()) == list(alone["tts_start"].dropna())
    assert list(checked["tts_end"].dropna()) == list(alone["tts_end"].dropna())
