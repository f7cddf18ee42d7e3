"""Rows of the data pipeline and the shard schema, in one place.

A row travels through the stages as a dict (a pandas row inside Ray Data). Its ``status`` is
``"ok"`` until a stage refuses it (:func:`refuse`); the refusing stage writes the
:class:`~salad_ray.accounting.Reason` into ``status``, its details into ``detail`` and its own name
into ``stage`` (``"read"`` for records refused as they were read), and every later stage passes the
row through untouched, so the shard writer sees every input exactly once: in a shard, or in the
quarantine with its reason. ``raw`` is the record as read and ``origin`` where it was read; the
quarantine keeps both.

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
teacher_logprobs    list<list<float16>>           (len(w), k) their natural-log probabilities, row 0 all 0
                                                  (rounded to float16 from the teacher's float32:
                                                  README, *Teacher top-k storage*)
==================  ============================  =========================================================

Quarantine schema (one row per refused record, Parquet):

==================  ============================  =========================================================
column              type                          meaning
==================  ============================  =========================================================
sample_id           string                        the id the sample would have had
text_id             string                        as in the shards (for records refused as read: a hash of
                                                  origin and value)
source              string                        as in the shards
origin              string                        where the record was read: file:line, file row n,
                                                  dataset [split] row n, fortune file #n, ...
stage               string                        the stage that refused it (read, plan, tts, asr, ...)
reason_kind         string                        the :class:`~salad_ray.accounting.Reason` (counts use it)
reason              string                        the reason with its details
text                string                        the text as read, whole (bytes that are not UTF-8
                                                  decoded with U+FFFD for reading)
raw_bytes           binary                        the bytes as read when they are not UTF-8, else null
==================  ============================  =========================================================

The shard writer returns a manifest, one row per input (:data:`MANIFEST_COLUMNS`): its ``kind``
(shards, quarantine or skipped), the ``file`` it went to and its ``sample_id``, which the driver
commits, ``teacher_retries``: the teacher calls of its batch made again (on one row per batch), and
``tts_start``, ``tts_end``, ``tts_actor``: the span of the TTS call that spoke its batch, on that
batch's first row (the TTS actors' busy and idle time, :func:`salad_ray.accounting.tts_usage`).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from salad_ray.accounting import Reason, Refusal
from salad_ray.audio import SAMPLE_RATE, read_audio
from salad_ray.batch import Sample
from salad_ray.interleave import TokenSpan

OK = "ok"
DONE = Reason.DONE.value  # committed by an earlier run: skipped, neither written nor quarantined
RETRIES = "teacher_retries"
# One TTS call (a batch spoken by one actor): its start and end (seconds since the epoch) and the
# actor, carried by the batch's first row to the manifest (NaN / None on the other rows).
TTS_CALL = ("tts_start", "tts_end", "tts_actor")
MANIFEST_COLUMNS = ["kind", "file", "sample_id", RETRIES, *TTS_CALL]

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
        ("teacher_logprobs", pa.list_(pa.list_(pa.float16()))),
    ]
)
# Quarantine columns under the names files written before a rename hold them by (read as today's).
QUARANTINE_RENAMED = {"reason_kind": "kind"}
QUARANTINE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("text_id", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("stage", pa.string()),
        ("reason_kind", pa.string()),
        ("reason", pa.string()),
        ("text", pa.string()),
        ("raw_bytes", pa.binary()),
    ]
)


def is_ok(row: dict) -> bool:
    return row.get("status") == OK


def refuse(row: dict, stage: str, reason: Reason, detail: str = "") -> dict:
    """Mark a row as refused by ``stage`` for ``reason`` (quarantined, or skipped if the reason skips)."""
    row["status"], row["stage"], row["detail"] = reason.value, stage, detail
    return row


def refusal(row: dict) -> Refusal:
    """The refusal a refused row carries."""
    detail = row.get("detail")
    return Refusal(Reason(row["status"]), detail if isinstance(detail, str) else "")


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


def as_read(value) -> tuple[str, bytes | None]:
    """A record's ``raw`` value as the quarantine's (text, raw_bytes): a string as it is, bytes that
    are UTF-8 as their text, other bytes kept (and decoded with U+FFFD for reading), a missing value
    (None, or NaN from pandas) as an empty text, anything else as its ``str``; a string that is not
    encodable (lone surrogates) as the bytes it escapes."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), None
        except UnicodeDecodeError:
            return value.decode("utf-8", "replace"), value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", None
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (JSON allows "\ud800"): kept as the bytes they escape
        raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace"), raw
    return text, None


def quarantine_table(rows: list[dict]) -> pa.Table:
    """Refused rows as the quarantine keeps them: the record as read (``raw``, never the text a stage
    made of it), where it came from, the refusing stage and the reason."""
    read = [as_read(r.get("raw")) for r in rows]
    refusals = [refusal(r) for r in rows]

    def strings(name: str) -> list[str]:
        return [v if isinstance(v := r.get(name), str) else "" for r in rows]

    return pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "text_id": strings("text_id"),
            "source": strings("source"),
            "origin": strings("origin"),
            "stage": strings("stage"),
            "reason_kind": [f.reason.value for f in refusals],
            "reason": [f.message for f in refusals],
            "text": [text for text, _ in read],
            "raw_bytes": [raw for _, raw in read],
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
