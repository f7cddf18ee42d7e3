"""Rows of the data pipeline and the shard schema, in one place.

A row travels through the stages as a dict (a pandas row inside Ray Data). Its ``status`` is
``"ok"`` until a stage refuses it; the refusing stage writes the reason into ``status`` and its own
name into ``stage``, and every later stage passes the row through untouched, so the shard writer
sees every input exactly once: in a shard, or in the quarantine with its reason.

Shard schema (one row per sample, Parquet):

==================  ============================  =========================================================
column              type                          meaning
==================  ============================  =========================================================
sample_id           string                        stable id: hash of content + voice + settings
text_id             string                        hash of the normalised source text (or of the raw bytes)
source              string                        natural / active / text / heldout / probe
domain              string                        corpus domain (fortunes category, dataset field, ...)
cluster             int32                         text-pool cluster (-1 when none)
text                string                        the transcript actually used (words of w)
token_ids           list<int32>                   w, the pure text (BOS first when the tokenizer has one)
spans               list<struct<start,end,speech>> token ranges of w; speech ranges have audio
audio               list<binary>                  one FLAC (16-bit) per speech span, in order
sample_rate         int32                         of the audio (16000)
voice               string                        TTS voice, or "" for recorded speech and text
duration            float32                       seconds of speech in the sample
cer                 float32                       ASR character error rate of the speech (NaN: not checked)
teacher_ids         list<list<int32>>             (len(w), k) teacher top-k ids, row 0 all -1
teacher_logprobs    list<list<float32>>           (len(w), k) their natural-log probabilities, row 0 all 0
==================  ============================  =========================================================

Quarantine schema: sample_id, text_id, source, stage, reason, text (the first 200 characters).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from salad_ray.audio import SAMPLE_RATE, read_audio
from salad_ray.batch import Sample
from salad_ray.interleave import TokenSpan

OK = "ok"
DONE = "done"  # committed by an earlier run: skipped, neither written nor quarantined

SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("speech", pa.bool_())])
SHARD_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("text_id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("cluster", pa.int32()),
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int32())),
        ("spans", pa.list_(SPAN)),
        ("audio", pa.list_(pa.binary())),
        ("sample_rate", pa.int32()),
        ("voice", pa.string()),
        ("duration", pa.float32()),
        ("cer", pa.float32()),
        ("teacher_ids", pa.list_(pa.list_(pa.int32()))),
        ("teacher_logprobs", pa.list_(pa.list_(pa.float32()))),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("text_id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("text", pa.string()),
    ]
)


def is_ok(row: dict) -> bool:
    return row.get("status") == OK


def refuse(row: dict, stage: str, reason: str) -> dict:
    """Mark a row as quarantined by ``stage`` for ``reason``."""
    row["status"], row["stage"] = reason, stage
    return row


def span_dicts(spans: list[TokenSpan]) -> list[dict]:
    return [{"start": s.start, "end": s.end, "speech": s.speech} for s in spans]


def _plain(value):
    """Lists as lists: between Ray Data stages list fields come back as (nested) numpy arrays."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value] if value.dtype == object else value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


LIST_COLUMNS = ("token_ids", "spans", "audio", "teacher_ids", "teacher_logprobs")


def shard_table(rows: list[dict]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in SHARD_SCHEMA.names}
    for name in LIST_COLUMNS:
        columns[name] = [[] if v is None else _plain(v) for v in columns[name]]
    columns["cluster"] = [
        -1 if c is None or (isinstance(c, float) and math.isnan(c)) else int(c) for c in columns["cluster"]
    ]
    columns["cer"] = [math.nan if c is None else float(c) for c in columns["cer"]]
    columns["voice"] = [v or "" for v in columns["voice"]]
    columns["domain"] = [d or "" for d in columns["domain"]]
    return pa.table(columns, schema=SHARD_SCHEMA)


def quarantine_table(rows: list[dict]) -> pa.Table:
    raw = [row.get("text") or row.get("raw") or "" for row in rows]
    text = [(t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t))[:200] for t in raw]
    return pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "text_id": [r.get("text_id") or "" for r in rows],
            "source": [r.get("source") or "" for r in rows],
            "stage": [r.get("stage") or "" for r in rows],
            "reason": [r["status"] for r in rows],
            "text": text,
        },
        schema=QUARANTINE_SCHEMA,
    )


def sample_from_row(row: dict) -> Sample:
    """A shard row (as returned by pyarrow's to_pylist) as an in-memory :class:`Sample`."""
    audio = [
        read_audio(blob, name=f"sample {row['sample_id']} span {n}") for n, blob in enumerate(row["audio"])
    ]
    if row["sample_rate"] != SAMPLE_RATE:
        raise ValueError(f"sample {row['sample_id']}: sample rate {row['sample_rate']} != {SAMPLE_RATE}")
    return Sample(
        sample_id=row["sample_id"],
        ids=list(row["token_ids"]),
        spans=[TokenSpan(s["start"], s["end"], s["speech"]) for s in row["spans"]],
        audio=audio,
        teacher_ids=np.asarray(row["teacher_ids"], dtype=np.int64),
        teacher_logprobs=np.asarray(row["teacher_logprobs"], dtype=np.float32),
        source=row["source"],
    )
