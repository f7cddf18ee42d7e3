"""The data pipeline on a local Ray cluster: real espeak-ng, whisper-tiny, the teacher deployment."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from transformers import AutoTokenizer

from salad_ray.accounting import Reason
from salad_ray.asr import WhisperASR, cer
from salad_ray.assets import resolve
from salad_ray.audio import SAMPLE_RATE, encode_flac, read_audio
from salad_ray.config import SpeechSource, TextSource, load_config
from salad_ray.corpus import Rejected, read_texts, screen_texts
from salad_ray.pipeline.dataflow import run_natural, run_texts, text_jobs
from salad_ray.pipeline.shards import ShardStore
from salad_ray.teacher.deployment import live_replicas
from salad_ray.testing.processes import free_port

pytestmark = pytest.mark.slow
MAX_CER = 0.35


@pytest.fixture(scope="module")
def config(ray_cluster):
    return load_config(
        "smoke",
        overrides=[
            f"teacher.http_port={free_port()}",
            "teacher.app_name=pipeline-teacher",
            "teacher.route_prefix=/pipeline",
            f"selection.max_cer={MAX_CER}",
            "data.fuse_stages=false",  # the cluster's shape: TTS, ASR and light pools of their own
        ],
    )


def texts(categories, n, seed_words=(8, 25)):
    source = TextSource(
        kind="fortunes", categories=categories, min_words=seed_words[0], max_words=seed_words[1], limit=n
    )
    return list(read_texts(source))


def assert_exactly_once(store: ShardStore, expected_ids):
    shards, quarantine = store.ids("shards"), store.ids("quarantine")
    assert len(shards) + len(quarantine) == len(set(shards) | set(quarantine))  # nothing twice
    assert set(shards) | set(quarantine) == set(expected_ids)  # nothing lost
    assert store.table().num_rows == len(shards)


def test_texts_become_shards_whose_speech_says_the_text(config, tmp_path):
    jobs = text_jobs(texts(["science", "education"], 10), config, voices=["en-us", "en-gb"], source="active")
    store = ShardStore(tmp_path / "round")
    report = run_texts(config, jobs, store, name="round")
    assert report.inputs == len(jobs) == report.written + sum(report.quarantined.values())
    assert report.written >= 6
    assert_exactly_once(store, jobs["sample_id"])
    # the TTS actors' calls reached the report: speaking time within the pipeline's wall time per actor
    assert report.tts_busy_s > 0 and report.tts_idle_s >= 0
    assert report.tts_busy_s + report.tts_idle_s <= report.wall_seconds * config.resources.tts.actors[1]

    # Listen to every shard independently: whisper-tiny's transcript of each speech span must match
    # the words of w under that span.
    tokenizer = AutoTokenizer.from_pretrained(resolve(config.models.llm, "causal-lm"))
    asr = WhisperASR(resolve("asset:whisper-tiny-ct2"))
    for row in store.table().to_pylist():
        speech = [s for s in row["spans"] if s["speech"]]
        assert len(speech) == len(row["audio"]) >= 1
        said = [tokenizer.decode(row["token_ids"][s["start"] : s["end"]]) for s in speech]
        heard = asr.transcribe([read_audio(blob) for blob in row["audio"]])
        assert cer(said, heard) <= MAX_CER, (said, heard)
        assert row["cer"] <= MAX_CER and row["voice"] in ("en-us", "en-gb")
        assert np.asarray(row["teacher_ids"]).shape == (len(row["token_ids"]), config.distill.top_k)
    for row in store.table("quarantine").to_pylist():
        assert row["reason"].startswith("ASR check failed") and row["stage"] == "asr"

    files = sorted(p.name for p in store.dir("shards").iterdir())
    again = run_texts(config, jobs, store, name="round again")
    assert again.written == 0 and again.skipped == {Reason.DONE: len(jobs)} and not again.quarantined
    assert sorted(p.name for p in store.dir("shards").iterdir()) == files  # rerunning adds nothing

    # data.fuse_stages (one actor per pipeline, as the smoke preset runs) writes the same samples
    fused = config.model_copy(deep=True)
    fused.data.fuse_stages = True
    one = ShardStore(tmp_path / "fused")
    run_texts(fused, jobs, one, name="fused")
    assert sorted(one.ids("quarantine")) == sorted(store.ids("quarantine"))
    ours = {row["sample_id"]: row for row in store.table().to_pylist()}
    for row in one.table().to_pylist():
        twin = ours.pop(row["sample_id"])
        for field in ("token_ids", "spans", "audio", "cer", "voice"):
            assert row[field] == twin[field], field
        assert [ids[0] for ids in row["teacher_ids"]] == [ids[0] for ids in twin["teacher_ids"]]
        # the same teacher in other batches, stored as float16: equal within a float16 step (2^-10)
        np.testing.assert_allclose(row["teacher_logprobs"], twin["teacher_logprobs"], rtol=2e-3, atol=1e-3)
    assert not ours


def _tts_actors(state: str = "ALIVE") -> list[dict]:
    # GCS actor table (ray.util.state needs the dashboard, which the test cluster leaves out).
    from ray._private.state import actors

    return [
        a
        for a in actors().values()
        if a["ActorClassName"] == "MapWorker(MapBatches(PlanAndSpeak))" and a["State"] == state
    ]


def test_tts_pool_grows_under_backlog_and_a_killed_actor_loses_nothing(config, tmp_path):
    elastic = config.model_copy(deep=True)
    elastic.resources.tts.actors = (1, 2)
    elastic.data.tts_batch_size = 1
    records = texts(["literature", "wisdom", "people"], 60, (20, 40))
    # two bad records ride along: they must end in the quarantine, once each
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "\xff\xfe not text"}\n   \n')
    bad = list(screen_texts(TextSource(kind="jsonl", path=str(tmp_path / "bad.jsonl"))))
    assert all(isinstance(r, Rejected) for r in bad)
    jobs = text_jobs(records + bad, elastic, voices=["en-us", "en-gb+f3"], source="active")
    store = ShardStore(tmp_path / "elastic")
    seen, killed = [], []
    stop = threading.Event()

    def watch():
        first_alive = None
        while not stop.is_set():
            actors = _tts_actors()
            seen.append(len(actors))
            if actors and first_alive is None:
                first_alive = time.time()
            if actors and not killed and first_alive and time.time() - first_alive > 2.0:
                os.kill(actors[0]["Pid"], signal.SIGKILL)  # the actor dies mid-run, its tasks in flight
                killed.append(actors[0]["ActorID"])
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = run_texts(elastic, jobs, store, name="elastic", check_asr=False)
    finally:
        stop.set()
        watcher.join()
    assert killed, "the TTS stage finished before an actor could be killed"
    from ray._private.state import actors

    assert actors(killed[0])["NumRestarts"] >= 1  # Ray Data restarted it and retried its work
    assert max(seen) == 2, f"the pool never grew past {max(seen)} actors"
    assert report.inputs == len(jobs) == report.written + sum(report.quarantined.values())
    assert_exactly_once(store, jobs["sample_id"])
    kinds = sorted(store.table("quarantine").column("reason_kind").to_pylist())
    assert kinds == [Reason.EMPTY, Reason.NOT_UTF8]


def test_a_teacher_replica_killed_mid_stage_costs_retries_not_samples(config, tmp_path):
    """SIGKILL the teacher's replica while the teacher stage runs: Serve starts a new replica, the
    calls the dead one held are retried (counted in the summary) or, when none was in flight, Serve
    routes the next calls to the new replica, and every sample is written exactly once. Whether a
    call is in flight at the kill is timing (1 retry in each of two local runs, 0 in a CI run): the count is
    checked against the summary, and RetryingClient's counting in tests/teacher/test_client.py."""
    faulty = config.model_copy(deep=True)
    faulty.data.teacher_batch_size = 1  # one call per sample: a call is in flight at almost any moment
    faulty.teacher.retry_wait_s = 0.5
    jobs = text_jobs(
        texts(["literature", "wisdom", "people", "science"], 150), faulty, voices=[], source="text"
    )
    store = ShardStore(tmp_path / "faults")
    app = faulty.teacher.app_name
    killed: list[str] = []
    stop_watching = threading.Event()

    def watch():
        while not stop_watching.is_set() and not killed:
            replicas = live_replicas(app)
            if replicas and store.dir("shards").exists() and len(list(store.dir("shards").iterdir())) >= 5:
                os.kill(replicas[0].pid, signal.SIGKILL)
                killed.append(replicas[0].actor_id)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = run_texts(faulty, jobs, store, name="teacher faults", speech=False)
    finally:
        stop_watching.set()
        watcher.join()
    assert killed, "the teacher stage finished before its replica could be killed"
    assert [r.actor_id for r in live_replicas(app)] != killed  # Serve replaced the replica
    assert f"{report.teacher_retries} teacher calls retried" in report.summary()
    assert report.written == len(jobs) == report.inputs and not report.quarantined
    assert_exactly_once(store, jobs["sample_id"])


def test_text_only_samples(config, tmp_path):
    jobs = text_jobs(texts(["food"], 6), config, voices=[], source="text")
    store = ShardStore(tmp_path / "text")
    report = run_texts(config, jobs, store, name="text", speech=False)
    assert report.written == len(jobs)
    for row in store.table().to_pylist():
        assert row["audio"] == [] and [s["speech"] for s in row["spans"]] == [False]
        assert len(row["teacher_ids"]) == len(row["token_ids"]) and row["voice"] == ""


@pytest.mark.parametrize("speech", [False, True], ids=["text", "stand-in"])
def test_a_hostile_file_is_accounted_for_record_by_record(config, tmp_path, adversarial_jsonl, speech):
    """The text pipeline (text-only samples) and the natural stand-in's (spoken, unchecked) read the
    hostile JSONL: every line is written, quarantined with its value as read, or skipped."""
    path, as_read = adversarial_jsonl
    source = TextSource(kind="jsonl", path=str(path), domain_field="topic")
    jobs = text_jobs(
        screen_texts(source, ["medicine"]), config, voices=["en-us"] if speech else [], source="text"
    )
    store = ShardStore(tmp_path / "hostile")
    report = run_texts(config, jobs, store, name="hostile", speech=speech, check_asr=False)
    assert report.inputs == len(as_read) == report.accounted()
    assert report.skipped == {Reason.HELDOUT_ONLY_DOMAIN: 1, Reason.DUPLICATE: 1}
    if not speech:
        assert report.written == 6
    quarantine = store.table("quarantine").to_pylist()
    assert len(quarantine) == sum(report.quarantined.values())
    for q in quarantine:
        if q["stage"] == "read":
            value = as_read[int(q["origin"].rsplit(":", 1)[1]) - 1]
            assert (q["raw_bytes"] if isinstance(value, bytes) else q["text"]) == value
        assert q["text"] != "nan"


@pytest.fixture(scope="module")
def recorded(espeak):
    """A small recorded-speech corpus: utterances with continuations, word timestamps, bad records."""
    rows = []
    for n, record in enumerate(texts(["science"], 4)):
        words = record.text.split()
        pieces = espeak.synthesize(words, "en-us+m3")
        t, times = 0.0, []
        for p in pieces:
            times.append([t, t + len(p) / SAMPLE_RATE])
            t += len(p) / SAMPLE_RATE
        audio = encode_flac(np.concatenate(pieces))
        if n % 2:
            rows.append({"audio": audio, "text": record.text, "next": None, "times": times})
        else:
            rows.append(
                {"audio": audio, "text": record.text, "next": "and so the story goes on", "times": None}
            )
    rows.append({"audio": b"RIFF broken", "text": "a broken recording", "next": "more text", "times": None})
    nan_wav = io.BytesIO()
    sf.write(nan_wav, np.full(1600, np.nan, np.float32), SAMPLE_RATE, format="WAV", subtype="FLOAT")
    rows.append({"audio": nan_wav.getvalue(), "text": "not a number", "next": "x y", "times": None})
    return rows


def _emilia_shard(tool, rows: list[dict], path) -> None:
    """Rows as one webdataset tar in Emilia's layout: <key>.mp3 beside <key>.json (text and the rest);
    decodable, finite recordings re-encoded as MP3 (LAME aborts on NaN), the others' bytes kept."""
    import json

    samples = []
    for n, row in enumerate(rows):
        audio = row["audio"]
        try:
            wave, rate = sf.read(io.BytesIO(audio), dtype="float32")
        except sf.LibsndfileError:
            wave = None
        if wave is not None and np.isfinite(wave).all():
            mp3 = io.BytesIO()
            sf.write(mp3, wave, rate, format="MP3")
            audio = mp3.getvalue()
        meta = json.dumps({k: row[k] for k in ("text", "next", "times")}).encode()
        samples.append((f"utt{n:03d}", {"mp3": audio, "json": meta}))
    tool.webdataset_shard(path, samples)


@pytest.mark.parametrize("kind", ["parquet", "hf", "webdataset"])
def test_recorded_speech_is_decoded_aligned_and_scored(config, tmp_path, recorded, kind, rehearsal_tool):
    """Parquet files, a saved HF dataset, and Emilia's layout streamed through the hub loader
    (``path: webdataset`` with ``data_files``, the transcript at the dotted ``json.text``)."""
    path = tmp_path / "corpus"
    fields = {"continuation_field": "next", "word_times_field": "times"}
    if kind == "parquet":
        path.mkdir()
        pq.write_table(pa.Table.from_pylist(recorded), path / "part-0.parquet")
    elif kind == "hf":
        import datasets

        datasets.Dataset.from_list(recorded).save_to_disk(str(path))
    if kind == "webdataset":
        path.mkdir()
        _emilia_shard(rehearsal_tool, recorded, path / "EN-000000.tar")
        source = SpeechSource(
            kind="hf",
            path="webdataset",
            data_files=str(path / "*.tar"),
            audio_field="mp3",
            text_field="json.text",
            continuation_field="json.next",
            word_times_field="json.times",
        )
    else:
        source = SpeechSource(kind=kind, path=str(path), **fields)
    store = ShardStore(tmp_path / "natural")
    report = run_natural(config, source, store)
    assert report.inputs == len(recorded) and report.written == 4
    assert report.quarantined == {"bad audio": 2}
    table = store.table().to_pylist()
    assert {r["source"] for r in table} == {"natural"} and all(r["duration"] > 0 for r in table)
    assert len(store.done_ids()) == len(recorded)
    again = run_natural(config, source, store)
    assert again.skipped == {Reason.DONE: len(recorded)} and again.written == 0
    origins = store.table("quarantine").column("origin").to_pylist()
    assert all(o.startswith(source.path) for o in origins)
