"""The data pipeline on Ray Data: texts or recorded speech in, committed shards out.

    texts ─> [plan (validate, normalise, spans, tokens) ─> TTS] ─> [ASR check] ─> [teacher ─> write]
    texts ─> [plan (one text span)]                                              ─> [teacher ─> write]
    recorded speech ─> [decode, validate, align, tokens]                         ─> [teacher ─> write]

Every bulk stage is a ``map_batches`` over the stage classes of :mod:`salad_ray.pipeline.stages`;
stages in one bracket share an actor (each actor start imports torch and loads a model, so a
pipeline of small rounds is dominated by start-ups otherwise). Resources and pool sizes come from
:mod:`salad_ray.resources`. Inputs already committed to the
store are skipped, refused records go to the store's quarantine with their reason, and the driver
commits what the run returned (:class:`~salad_ray.pipeline.shards.ShardStore`), so a rerun adds
nothing and an interrupted run loses nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from salad_ray.config import RunConfig, SpeechSource, TTSConfig
from salad_ray.corpus import RawText, TextRecord
from salad_ray.pipeline.records import OK
from salad_ray.pipeline.shards import ShardStore
from salad_ray.pipeline.stages import (
    ASRCheckStage,
    NaturalStage,
    PlanStage,
    ShardWriter,
    TeacherStage,
    TTSStage,
)
from salad_ray.resources import asr_stage_options, light_stage_options, tts_stage_options
from salad_ray.spoken import sample_id, synthesis_settings

JOB_COLUMNS = [
    "sample_id",
    "text_id",
    "raw",
    "problem",
    "domain",
    "cluster",
    "voice",
    "source",
    "status",
    "stage",
]


@dataclass
class PipelineReport:
    """What one pipeline run did, by count."""

    name: str
    inputs: int = 0
    skipped: int = 0  # committed by an earlier run
    written: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # by kind of reason
    wall_seconds: float = 0.0

    def summary(self) -> str:
        bad = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.quarantined.items())) or "none"
        return (
            f"{self.name}: {self.inputs} inputs -> {self.written} written, {self.skipped} already done, "
            f"{sum(self.quarantined.values())} quarantined ({bad}) in {self.wall_seconds:.0f} s"
        )


def reason_kind(reason: str) -> str:
    """The part of a quarantine reason before its details: 'synthesis failed', 'over-long text'..."""
    return reason.split(":")[0].split(" (")[0]


# ------------------------------------------------------------------------------------------- jobs


def text_jobs(
    records: Iterable[RawText | TextRecord],
    config: RunConfig,
    *,
    voices: list[str],
    source: str,
    clusters: Iterable[int] | None = None,
) -> pd.DataFrame:
    """One job per text, voices taken in turn; the job's id is the sample id it will produce."""
    settings = synthesis_settings(config)
    cluster_iter = iter(clusters) if clusters is not None else None
    rows = []
    for n, record in enumerate(records):
        if isinstance(record, TextRecord):
            raw, problem, tid, domain = record.text, None, record.text_id, record.domain
        else:
            raw, problem, tid, domain = record.value, record.problem, record.text_id, record.domain
        voice = voices[n % len(voices)] if voices else ""
        rows.append(
            {
                "sample_id": sample_id(tid, voice, settings),
                "text_id": tid,
                "raw": raw,
                "problem": problem,
                "domain": domain,
                "cluster": -1 if cluster_iter is None else int(next(cluster_iter)),
                "voice": voice,
                "source": source,
                "status": OK,
                "stage": "",
            }
        )
    jobs = pd.DataFrame(rows, columns=JOB_COLUMNS)
    duplicated = jobs["sample_id"].duplicated()
    if duplicated.any():  # the same text twice with the same voice would be the same sample
        jobs = jobs[~duplicated]
    return jobs


# ------------------------------------------------------------------------------------------- runs


def ensure_teacher(config: RunConfig) -> None:
    """Deploy the teacher unless it is running already or an external server is configured."""
    if config.teacher.url:
        return
    from ray import serve

    try:
        serve.get_app_handle(config.teacher.app_name)
    except Exception:  # not deployed yet (Serve raises different types across versions)
        from salad_ray.teacher.deployment import deploy_teacher

        deploy_teacher(config)


def _chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(frame), size)]


class StageChain:
    """Pipeline stages applied in turn inside one actor; each subclass names its chain, which is
    what Ray Data's progress shows."""

    stages: list

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        for stage in self.stages:
            batch = stage(batch)
        return batch


class PlanAndSpeak(StageChain):
    """Plan, then speak, in one TTS actor: planning is light, and a pipeline starts one actor fewer."""

    def __init__(self, plan_args: tuple, tts: TTSConfig):
        self.stages = [PlanStage(*plan_args), TTSStage(tts)]


class TeachAndWrite(StageChain):
    """Teacher top-k, then the shard write, in one light actor (both mostly wait on I/O)."""

    def __init__(self, config: RunConfig, root: str):
        self.stages = [TeacherStage(config), ShardWriter(root)]


class TextToShards(StageChain):
    """Every stage of a text pipeline in one actor (``data.fuse_stages``): plan, speak and check
    (speech only; the check when ``max_cer`` is set), teacher top-k, shard write."""

    def __init__(self, plan_args: tuple, config: RunConfig, speech: bool, max_cer: float | None, root: str):
        self.stages = [PlanStage(*plan_args)]
        if speech:
            self.stages.append(TTSStage(config.tts))
        if max_cer is not None:
            self.stages.append(ASRCheckStage(config.models.asr, max_cer))
        self.stages += [TeacherStage(config), ShardWriter(root)]


def _teacher_and_write(ds, config: RunConfig, store: ShardStore):
    return ds.map_batches(
        TeachAndWrite,
        fn_constructor_args=(config, str(store.root)),
        batch_size=config.data.teacher_batch_size,
        batch_format="pandas",
        **light_stage_options(config),
    )


def _finish(ds, store: ShardStore, report: PipelineReport, t0: float) -> PipelineReport:
    manifest = ds.to_pandas()
    skipped = manifest[manifest["kind"] == "skipped"]
    committed = manifest[manifest["kind"] != "skipped"]
    store.commit(committed[["kind", "file", "sample_id"]].itertuples(index=False, name=None))
    report.skipped += len(skipped)
    report.inputs += len(manifest)
    report.written = int((committed["kind"] == "shards").sum())
    quarantined = committed[committed["kind"] == "quarantine"]["sample_id"]
    if len(quarantined):
        reasons = (
            store.table("quarantine", ["sample_id", "reason"]).to_pandas().set_index("sample_id")["reason"]
        )
        report.quarantined = dict(Counter(reason_kind(r) for r in reasons.loc[list(quarantined)]))
    report.wall_seconds = time.time() - t0
    return report


def run_texts(
    config: RunConfig,
    jobs: pd.DataFrame,
    store: ShardStore,
    *,
    name: str,
    speech: bool = True,
    check_asr: bool = True,
    max_cer: float | None = None,
) -> PipelineReport:
    """Texts to shards: spoken by TTS (``speech``), or as text-only samples.

    ``check_asr`` transcribes the speech and records its CER, refusing samples above ``max_cer``
    (default ``selection.max_cer``; ``inf`` records without refusing, as probes need).
    """
    import ray

    t0 = time.time()
    done = store.done_ids()
    todo = jobs[~jobs["sample_id"].isin(done)]
    report = PipelineReport(name, inputs=len(jobs) - len(todo), skipped=len(jobs) - len(todo))
    if todo.empty:
        report.wall_seconds = time.time() - t0
        return report
    ensure_teacher(config)
    batch = config.data.tts_batch_size
    ds = ray.data.from_pandas(_chunks(todo, batch))
    plan_args = (
        config.models.llm,
        config.interleave,
        config.seed,
        config.data.min_words,
        config.data.max_words,
        speech,
    )
    cer_limit = (config.selection.max_cer if max_cer is None else max_cer) if speech and check_asr else None
    if config.data.fuse_stages:
        ds = ds.map_batches(
            TextToShards,
            fn_constructor_args=(plan_args, config, speech, cer_limit, str(store.root)),
            batch_size=batch,
            batch_format="pandas",
            **(tts_stage_options(config) if speech else light_stage_options(config, max_actors=1)),
        )
        return _finish(ds, store, report, t0)
    if speech:
        ds = ds.map_batches(
            PlanAndSpeak,
            fn_constructor_args=(plan_args, config.tts),
            batch_size=batch,
            batch_format="pandas",
            **tts_stage_options(config),
        )
        if cer_limit is not None:
            ds = ds.map_batches(
                ASRCheckStage,
                fn_constructor_args=(config.models.asr, cer_limit),
                batch_size=config.data.asr_batch_size,
                batch_format="pandas",
                **asr_stage_options(config),
            )
    else:
        ds = ds.map_batches(
            PlanStage,
            fn_constructor_args=plan_args,
            batch_size=batch,
            batch_format="pandas",
            **light_stage_options(config, max_actors=1),
        )
    return _finish(_teacher_and_write(ds, config, store), store, report, t0)


def _natural_rows(batch: pd.DataFrame, source: SpeechSource) -> pd.DataFrame:
    """Dataset columns -> pipeline row fields (natural speech)."""
    n = len(batch)
    missing = [c for c in (source.audio_field, source.text_field) if c not in batch.columns]
    if missing:
        raise KeyError(f"{source.path}: no column(s) {missing} (columns: {list(batch.columns)})")

    def column(name: str | None, default):
        return list(batch[name]) if name and name in batch.columns else [default] * n

    return pd.DataFrame(
        {
            "sample_id": [""] * n,
            "text_id": [""] * n,
            "raw": column(source.text_field, ""),
            "audio_in": column(source.audio_field, None),
            "continuation": column(source.continuation_field, None),
            "word_times": column(source.word_times_field, None),
            "domain": [str(d) for d in column(source.domain_field, "natural")],
            "cluster": [-1] * n,
            "voice": [""] * n,
            "source": ["natural"] * n,
            "status": [OK] * n,
            "stage": [""] * n,
        }
    )


def read_speech_source(source: SpeechSource):
    """A Ray Dataset of a recorded-speech source (Parquet files, or a saved / hub HF dataset)."""
    import ray

    if source.kind == "parquet":
        ds = ray.data.read_parquet(source.path)
    else:
        import datasets

        try:
            data = datasets.load_from_disk(source.path)
        except FileNotFoundError:
            data = datasets.load_dataset(source.path, split=source.split)
        if isinstance(data, datasets.DatasetDict):
            data = data[source.split]
        ds = ray.data.from_huggingface(data)
    return ds.limit(source.limit) if source.limit else ds


def run_natural(
    config: RunConfig, source: SpeechSource, store: ShardStore, *, name: str = "natural"
) -> PipelineReport:
    """Recorded speech to shards: decode, validate, align, tokenize, teacher, write."""
    t0 = time.time()
    ensure_teacher(config)
    settings = {k: v for k, v in synthesis_settings(config).items() if k != "tts"}
    ds = read_speech_source(source).map_batches(
        _natural_rows, fn_args=(source,), batch_format="pandas", batch_size=config.data.asr_batch_size
    )
    ds = ds.map_batches(
        NaturalStage,
        fn_constructor_args=(
            config.models.llm,
            config.interleave,
            settings,
            config.seed,
            config.audio.max_seconds,
            config.data.max_words,
            frozenset(store.done_ids()),
        ),
        batch_size=config.data.asr_batch_size,
        batch_format="pandas",
        **light_stage_options(config),
    )
    return _finish(_teacher_and_write(ds, config, store), store, PipelineReport(name), t0)
