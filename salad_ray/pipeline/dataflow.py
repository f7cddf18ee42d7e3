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
nothing and an interrupted run loses nothing. Each run returns a
:class:`~salad_ray.accounting.PipelineReport` in which every input is written, quarantined or
skipped, by reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pandas as pd

from salad_ray.accounting import PipelineReport, Reason, tts_usage
from salad_ray.config import RunConfig, SpeechSource, TTSConfig
from salad_ray.corpus import Rejected, TextRecord
from salad_ray.pipeline.records import OK, RETRIES, TTS_CALL, refuse
from salad_ray.pipeline.shards import ShardStore
from salad_ray.pipeline.stages import (
    ASRCheckStage,
    NaturalStage,
    PlanStage,
    ShardWriter,
    TeacherStage,
    TTSStage,
)
from salad_ray.resources import light_stage_options, pool_stage_options
from salad_ray.spoken import sample_id, synthesis_settings

JOB_COLUMNS = [
    "sample_id",
    "text_id",
    "raw",
    "origin",
    "domain",
    "cluster",
    "voice",
    "source",
    "status",
    "stage",
    "detail",
]


# ------------------------------------------------------------------------------------------- jobs


def text_jobs(
    records: Iterable[TextRecord | Rejected],
    config: RunConfig,
    *,
    voices: list[str],
    source: str,
    clusters: Iterable[int] | None = None,
) -> pd.DataFrame:
    """One job per record read; the job's id is the sample id it will produce.

    A :class:`TextRecord` is a job to do, voices taken in turn. A :class:`Rejected` record is a job
    refused at stage ``read``: one whose reason quarantines carries the record as read through to
    the quarantine; one whose reason skips carries no text and never enters the pipeline (it is
    counted). A text that comes again with the same voice would be the same sample: it is skipped as
    a duplicate. ``clusters`` gives one cluster per record.
    """
    settings = synthesis_settings(config)
    cluster_iter = iter(clusters) if clusters is not None else None
    rows, seen, spoken = [], set(), 0
    for record in records:
        cluster = -1 if cluster_iter is None else int(next(cluster_iter))
        if isinstance(record, TextRecord):
            voice = voices[spoken % len(voices)] if voices else ""
            spoken += 1
            raw, origin, tid, domain = record.raw or record.text, record.origin, record.text_id, record.domain
        else:
            voice, raw, origin = "", record.record.value, record.record.origin
            tid, domain = record.text_id, record.record.domain
        row = {
            "sample_id": sample_id(tid, voice, settings),
            "text_id": tid,
            "raw": raw,
            "origin": origin,
            "domain": domain,
            "cluster": cluster,
            "voice": voice,
            "source": source,
            "status": OK,
            "stage": "",
            "detail": "",
        }
        if isinstance(record, Rejected):
            refuse(row, "read", record.refusal.reason, record.refusal.detail)
        elif row["sample_id"] in seen:
            refuse(row, "read", Reason.DUPLICATE, "the same text with the same voice")
        if row["status"] != OK and Reason(row["status"]).skips:
            row["raw"] = None
        seen.add(row["sample_id"])
        rows.append(row)
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def skipped_jobs(jobs: pd.DataFrame) -> pd.Series:
    """Which jobs never enter the pipeline: those refused as read for a reason that skips."""
    return jobs["status"].map(lambda status: status != OK and Reason(status).skips)


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
    what Ray Data's progress shows. An actor that speaks is busy for its whole call: the TTS call
    its batch carries (``TTS_CALL``, for the report's idle share) is widened from the TTS stage's
    own start and end to the chain's, so that a fused actor's ASR check, teacher call and write do
    not count as idle."""

    stages: list

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.time()
        for stage in self.stages:
            batch = stage(batch)
        speaks = any(isinstance(stage, TTSStage) for stage in self.stages)
        if speaks and TTS_CALL[0] in batch.columns:  # (a chain after the TTS actor keeps its times)
            spoke = batch[TTS_CALL[0]].notna()
            batch.loc[spoke, TTS_CALL[0]] = start
            batch.loc[spoke, TTS_CALL[1]] = time.time()
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
    """Commit what the run returned and count it into ``report``: written, quarantined by the
    quarantine's ``reason_kind`` column, skipped as already done, the teacher calls retried, and the TTS
    actors' busy and idle seconds."""
    manifest = ds.to_pandas()
    skipped = manifest[manifest["kind"] == "skipped"]
    committed = manifest[manifest["kind"] != "skipped"]
    store.commit(committed[["kind", "file", "sample_id"]].itertuples(index=False, name=None))
    report.count(Reason.DONE, len(skipped))
    report.inputs += len(manifest)
    report.teacher_retries = int(manifest[RETRIES].sum())
    calls = manifest.dropna(subset=[TTS_CALL[1]])
    report.tts_busy_s, report.tts_idle_s = tts_usage(*(calls[name] for name in TTS_CALL))
    report.written = int((committed["kind"] == "shards").sum())
    quarantined = committed[committed["kind"] == "quarantine"]["sample_id"]
    if len(quarantined):
        kinds = (
            store.table("quarantine", ["sample_id", "reason_kind"])
            .to_pandas()
            .set_index("sample_id")["reason_kind"]
        )
        for kind, n in kinds.loc[list(quarantined)].value_counts().items():
            report.count(Reason(kind), int(n))
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

    Every job is accounted for in the report: skipped (its reason skips, or committed already),
    written, or quarantined (refused as read, or by a stage).

    ``check_asr`` transcribes the speech and records its CER, refusing samples above ``max_cer``
    (default ``selection.max_cer``; ``inf`` records without refusing, as probes need).
    """
    import ray

    t0 = time.time()
    report = PipelineReport(name)
    skipped = skipped_jobs(jobs)
    for status, n in jobs.loc[skipped, "status"].value_counts().items():
        report.count(Reason(status), int(n))
    done = jobs["sample_id"].isin(store.done_ids()) & ~skipped
    report.count(Reason.DONE, int(done.sum()))
    report.inputs = int(skipped.sum() + done.sum())
    todo = jobs[~skipped & ~done]
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
            **(
                pool_stage_options(config.resources.tts)
                if speech
                else light_stage_options(config, max_actors=1)
            ),
        )
        return _finish(ds, store, report, t0)
    if speech:
        ds = ds.map_batches(
            PlanAndSpeak,
            fn_constructor_args=(plan_args, config.tts),
            batch_size=batch,
            batch_format="pandas",
            **pool_stage_options(config.resources.tts),
        )
        if cer_limit is not None:
            ds = ds.map_batches(
                ASRCheckStage,
                fn_constructor_args=(config.models.asr, cer_limit),
                batch_size=config.data.asr_batch_size,
                batch_format="pandas",
                **pool_stage_options(config.resources.asr),
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


ROW_COLUMN = "__salad_ray_row"  # the row number a saved or hub dataset gets for the quarantine's origin
NEXT_TRANSCRIPT = "__salad_ray_next"  # the next segment's transcript (SpeechSource.continuation_group_field)


def _natural_rows(batch: pd.DataFrame, source: SpeechSource) -> pd.DataFrame:
    """Dataset columns -> pipeline row fields (natural speech). The origin is the dataset and its
    row for a HF dataset; Parquet files read in parallel give no row number, so there it is the path.
    A dotted field (``json.text``) is read from the nested records of its first part's column."""
    from salad_ray.hfdata import get_field, has_field

    n = len(batch)
    missing = [f for f in (source.audio_field, source.text_field) if f.split(".")[0] not in batch.columns]
    if missing:
        raise KeyError(f"{source.path}: no column(s) {missing} (columns: {list(batch.columns)})")

    def column(name: str | None, default):
        if not name:
            return [default] * n
        if name in batch.columns:
            return list(batch[name])
        top, _, rest = name.partition(".")
        if not rest or top not in batch.columns:
            return [default] * n
        return [
            get_field(v, rest) if isinstance(v, dict) and has_field(v, rest) else default for v in batch[top]
        ]

    return pd.DataFrame(
        {
            "sample_id": [""] * n,
            "text_id": [""] * n,
            "raw": column(source.text_field, ""),
            "origin": [f"{source.path} [{source.split}] row {n}" for n in column(ROW_COLUMN, None)]
            if ROW_COLUMN in batch.columns
            else [source.path] * n,
            "audio_in": column(source.audio_field, None),
            "continuation": column(
                NEXT_TRANSCRIPT if source.continuation_group_field else source.continuation_field, None
            ),
            "word_times": column(source.word_times_field, None),
            "domain": [str(d) for d in column(source.domain_field, "natural")],
            "cluster": [-1] * n,
            "voice": [""] * n,
            "source": ["natural"] * n,
            "status": [OK] * n,
            "stage": [""] * n,
            "detail": [""] * n,
        }
    )


def read_speech_source(source: SpeechSource):
    """A Ray Dataset of a recorded-speech source: Parquet files, a saved HF dataset, or a streamed hub
    one (salad_ray.hfdata), each row numbered for the quarantine's origin; audio left encoded."""
    import ray

    if source.kind == "parquet":
        ds = ray.data.read_parquet(source.path)
        return ds.limit(source.limit) if source.limit else ds
    import datasets

    from salad_ray.hfdata import open_dataset

    data = open_dataset(source, audio_fields=(source.audio_field,))
    if source.continuation_group_field:
        data = datasets.IterableDataset.from_generator(
            _segments_with_next,
            features=_plus_column(data.features, NEXT_TRANSCRIPT, "string"),
            gen_kwargs={"source": source},
        )
    if isinstance(data, datasets.IterableDataset):
        data = data.take(source.limit) if source.limit else data
        numbered = _plus_column(data.features, ROW_COLUMN, "int64")
        data = data.map(lambda _, n: {ROW_COLUMN: n}, with_indices=True, features=numbered)
        # Not ray.data.from_huggingface: it first swaps a hub dataset for the hub's Parquet export of
        # the whole split (by its name, dropping take and map) and needs a network.
        from salad_ray.pipeline.streamed import StreamedDataset

        return ray.data.read_datasource(StreamedDataset(data))
    data = data.select(range(min(source.limit or len(data), len(data))))
    return ray.data.from_huggingface(data.add_column(ROW_COLUMN, list(range(len(data)))))


def _plus_column(features, column: str, dtype: str):
    """A stream's declared features with one more column (declared, so every block it yields has one
    schema), or None when the stream declares none."""
    import datasets

    if features is None:
        return None
    features = datasets.Features(features)
    features[column] = datasets.Value(dtype)
    return features


def _segments_with_next(source: SpeechSource):
    """The source's records in order, each with the next segment's transcript (its group's)."""
    from salad_ray.hfdata import open_dataset, with_next_transcript

    records = open_dataset(source, audio_fields=(source.audio_field,))
    group = source.continuation_group_field
    yield from with_next_transcript(records, source.text_field, group, NEXT_TRANSCRIPT)  # type: ignore[arg-type]


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
