"""The pipeline's stages: callables from a pandas batch of rows to a pandas batch of rows.

They import no Ray: Ray Data runs them as actor-pool stages (:mod:`salad_ray.pipeline.dataflow`),
and tests call the very same classes directly. Each holds its model (tokenizer, TTS, ASR, teacher
client) for the life of the actor, passes refused rows through untouched, and refuses a row by
writing the reason into it (:func:`salad_ray.pipeline.records.refuse`), never by dropping it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from salad_ray.accounting import Reason
from salad_ray.asr import WINDOW_SECONDS, WhisperASR, cer, check_tokens
from salad_ray.assets import resolve
from salad_ray.audio import SAMPLE_RATE, AudioError, encode_flac, read_audio
from salad_ray.config import InterleaveConfig, ModelRef, RunConfig, TTSConfig
from salad_ray.corpus import TextRejected, check_text
from salad_ray.interleave import TokenSpan, WordSpan, tokenize_spans
from salad_ray.pipeline.records import (
    DONE,
    MANIFEST_COLUMNS,
    OK,
    RETRIES,
    TTS_CALL,
    is_ok,
    refuse,
    span_dicts,
)
from salad_ray.pipeline.shards import ShardStore
from salad_ray.spoken import plan_text, stable_hash
from salad_ray.teacher.protocol import TeacherRequestError
from salad_ray.tts import build_tts
from salad_ray.tts.base import SynthesisError


def _rows(batch: pd.DataFrame) -> list[dict]:
    return batch.to_dict("records")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Rows back to a batch; fields a refused row never got are None (pandas would say NaN), so
    that Arrow can type list columns such as the teacher's top-k."""
    return pd.DataFrame(rows).astype(object).map(lambda v: None if _missing(v) else v)


def _field(row: dict, name: str):
    """A row's field, None when absent or missing (pandas gives NaN for missing values)."""
    value = row.get(name)
    return None if _missing(value) else value


def _each_ok(batch: pd.DataFrame, fn: Callable[[dict], dict]) -> pd.DataFrame:
    """Apply ``fn`` to the rows still ok, pass the others through."""
    return _frame([fn(row) if is_ok(row) else row for row in _rows(batch)])


class PlanStage:
    """Validate and normalise the text, cut it into spans, tokenize w.

    ``speech=False`` makes text-only samples: one text span, so c = w.
    """

    name = "plan"

    def __init__(
        self,
        llm: ModelRef,
        interleave: InterleaveConfig,
        seed: int,
        min_words: int,
        max_words: int,
        speech: bool = True,
    ):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(resolve(llm, "causal-lm"))
        self.interleave, self.seed = interleave, seed
        self.min_words, self.max_words, self.speech = min_words, max_words, speech

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return _each_ok(batch, self._plan)

    def _plan(self, row: dict) -> dict:
        try:
            text = check_text(row["raw"], self.min_words, self.max_words)
        except TextRejected as e:
            return refuse(row, self.name, e.refusal.reason, e.refusal.detail)
        bos = self.tokenizer.bos_token_id
        if not self.speech:  # one text span, cut at the context if need be
            ids = ([bos] if bos is not None else []) + self.tokenizer.encode(text, add_special_tokens=False)
            ids = ids[: self.interleave.max_tokens]
            text = self.tokenizer.decode(ids[1 if bos is not None else 0 :])
            spans = span_dicts([TokenSpan(0, len(ids), False)])
            row.update(
                text=text,
                token_ids=ids,
                spans=spans,
                speech_texts=[],
                audio=[],
                sample_rate=SAMPLE_RATE,
                duration=0.0,
            )
            return row
        try:
            plan = plan_text(row["text_id"], text, self.tokenizer, bos, self.interleave, self.seed)
        except ValueError as e:  # a single span longer than the context
            return refuse(row, self.name, Reason.CONTEXT, str(e))
        row.update(
            text=" ".join(plan.words),
            token_ids=plan.ids,
            spans=span_dicts(plan.token_spans),
            speech_texts=plan.speech_texts(),
        )
        return row


class TTSStage:
    """Speak each speech span with the row's voice; FLAC bytes per span."""

    name = "tts"

    def __init__(self, tts: TTSConfig):
        self.tts = build_tts(tts)
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.time()
        out = _each_ok(batch, self._speak)
        if len(out):
            call = (start, time.time(), self.actor)
            for name, value in zip(TTS_CALL, call, strict=True):
                out[name] = [value] + [None] * (len(out) - 1)
        return out

    def _speak(self, row: dict) -> dict:
        try:
            waves = self.tts.synthesize(list(row["speech_texts"]), row["voice"])
        except SynthesisError as e:
            return refuse(row, self.name, Reason.SYNTHESIS, str(e))
        row.update(
            audio=[encode_flac(w) for w in waves],
            sample_rate=SAMPLE_RATE,
            duration=float(sum(len(w) for w in waves) / SAMPLE_RATE),
        )
        return row


class ASRCheckStage:
    """Transcribe the synthetic speech with Whisper; refuse samples above the CER threshold, and
    samples with a span longer than Whisper's window (they cannot be checked)."""

    name = "asr"

    def __init__(self, asr: ModelRef, max_cer: float):
        self.asr = WhisperASR(resolve(asr))
        self.max_cer = max_cer

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = _rows(batch)
        todo, waves = [], []
        for row in rows:
            if not (is_ok(row) and row["speech_texts"]):
                continue
            spoken = [read_audio(blob) for blob in row["audio"]]
            longest = max(len(w) for w in spoken) / SAMPLE_RATE
            if longest > WINDOW_SECONDS:
                refuse(
                    row,
                    self.name,
                    Reason.ASR,
                    f"a {longest:.1f} s span is longer than Whisper's {WINDOW_SECONDS} s window",
                )
                continue
            todo.append(row)
            waves += spoken
        references = [t for row in todo for t in row["speech_texts"]]
        cap = check_tokens(max((self.asr.tokens(t) for t in references), default=0))
        transcripts = iter(self.asr.transcribe(waves, max_tokens=cap)) if waves else iter(())
        for row in todo:
            heard = [next(transcripts) for _ in row["audio"]]
            row["cer"] = cer(list(row["speech_texts"]), heard)
            if row["cer"] > self.max_cer:
                refuse(
                    row,
                    self.name,
                    Reason.ASR,
                    f"CER {row['cer']:.2f} > {self.max_cer:.2f} (heard {' | '.join(heard)[:80]!r})",
                )
        return _frame(rows)


class TeacherStage:
    """Attach the teacher's top-k log-probs of w, through the run's teacher client.

    Calls the teacher could not answer are retried (:class:`~salad_ray.teacher.client.RetryingClient`);
    the batch's first row carries how many (``teacher_retries``) to the shard writer's manifest.
    """

    name = "teacher"

    def __init__(self, config: RunConfig):
        from salad_ray.teacher.client import teacher_client

        self.client = teacher_client(config)
        self.k = config.distill.top_k

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = _rows(batch)
        todo = [r for r in rows if is_ok(r)]
        retried = self.client.retried
        if todo:
            try:
                answers = self.client.topk([list(map(int, r["token_ids"])) for r in todo], self.k)
            except TeacherRequestError:  # one bad row must not refuse its batch-mates: ask one by one
                answers = []
                for row in todo:
                    try:
                        answers.append(self.client.topk([list(map(int, row["token_ids"]))], self.k)[0])
                    except TeacherRequestError as e:
                        refuse(row, self.name, Reason.TEACHER, str(e))
                        answers.append(None)
            for row, answer in zip(todo, answers, strict=True):
                if answer is not None:
                    row.update(teacher_ids=answer.ids.tolist(), teacher_logprobs=answer.logprobs.tolist())
        for n, row in enumerate(rows):
            row[RETRIES] = self.client.retried - retried if n == 0 else 0
        return _frame(rows)


class NaturalStage:
    """Recorded speech: decode and validate the audio, align it with the text, tokenize w.

    With word timestamps the transcript is cut into spans as synthetic speech is and each speech
    span's audio is sliced at word boundaries; with a continuation the whole utterance is spoken
    and the continuation stays text (utterance mode).
    """

    name = "natural"

    def __init__(
        self,
        llm: ModelRef,
        interleave: InterleaveConfig,
        settings: dict,
        seed: int,
        max_seconds: float,
        max_words: int,
        done: frozenset[str] = frozenset(),
    ):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(resolve(llm, "causal-lm"))
        self.interleave, self.settings, self.seed = interleave, settings, seed
        self.max_seconds, self.max_words, self.done = max_seconds, max_words, done

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = _rows(batch)
        for row in rows:
            # The id hashes the recording, the transcript, the alignment and the settings.
            content = hashlib.sha256(_audio_bytes(row["audio_in"])).hexdigest()
            text_key = row["raw"] if isinstance(row["raw"], str) else repr(row["raw"])
            times = _field(row, "word_times")
            times = None if times is None else [list(map(float, t)) for t in times]
            row["sample_id"] = stable_hash(
                content, text_key, _field(row, "continuation"), times, self.settings
            )
            if row["sample_id"] in self.done:
                row["status"] = DONE
            elif is_ok(row):
                self._align(row)
        return _frame(rows)

    def _decode(self, value) -> np.ndarray:
        if isinstance(value, dict) and value.get("array") is not None:
            wave = np.asarray(value["array"], dtype=np.float32)
            return read_audio(encode_flac(wave, int(value["sampling_rate"])), max_seconds=self.max_seconds)
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise AudioError("no audio in the record")
        return read_audio(value, max_seconds=self.max_seconds)

    def _align(self, row: dict) -> dict:
        try:
            wave = self._decode(row["audio_in"])
        except AudioError as e:
            return refuse(row, self.name, Reason.BAD_AUDIO, str(e))
        try:
            text = check_text(row["raw"], 1, self.max_words)
        except TextRejected as e:
            return refuse(row, self.name, e.refusal.reason, e.refusal.detail)
        words = text.split()
        bos = self.tokenizer.bos_token_id
        times = _field(row, "word_times")
        continuation = _field(row, "continuation")
        if times is not None and len(times) > 0:
            if len(times) != len(words):
                return refuse(row, self.name, Reason.MISALIGNED, f"{len(times)} times, {len(words)} words")
            try:
                plan = plan_text(row["text_id"], text, self.tokenizer, bos, self.interleave, self.seed)
            except ValueError as e:
                return refuse(row, self.name, Reason.CONTEXT, str(e))
            words, ids, spans, word_spans = plan.words, plan.ids, plan.token_spans, plan.word_spans
            audio = [
                wave[int(times[s.start][0] * SAMPLE_RATE) : int(np.ceil(times[s.end - 1][1] * SAMPLE_RATE))]
                for s in word_spans
                if s.speech
            ]
            if any(len(a) == 0 for a in audio):
                return refuse(row, self.name, Reason.MISALIGNED, "an empty speech span")
        elif continuation:
            rest = str(continuation).split()
            try:
                ids, spans, _ = tokenize_spans(
                    self.tokenizer,
                    words + rest,
                    [WordSpan(0, len(words), True), WordSpan(len(words), len(words) + len(rest), False)],
                    bos,
                    self.interleave.max_tokens,
                )
            except ValueError as e:
                return refuse(row, self.name, Reason.CONTEXT, str(e))
            if not any(not s.speech for s in spans):
                return refuse(row, self.name, Reason.CONTEXT, "the continuation does not fit")
            words, audio = words + rest, [wave]
        else:
            return refuse(row, self.name, Reason.NO_TEXT_AFTER_SPEECH, "no word timestamps, no continuation")
        row.update(
            text=" ".join(words),
            token_ids=ids,
            spans=span_dicts(spans),
            speech_texts=[],
            audio=[encode_flac(a) for a in audio],
            sample_rate=SAMPLE_RATE,
            duration=float(sum(len(a) for a in audio) / SAMPLE_RATE),
        )
        return row


def _audio_bytes(value) -> bytes:
    """The recording's bytes, whatever form the dataset gives it in (for hashing)."""
    if isinstance(value, dict) and value.get("array") is not None:
        return np.asarray(value["array"], dtype=np.float32).tobytes()
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and Path(value).is_file():
        return Path(value).read_bytes()
    return value if isinstance(value, bytes) else repr(value).encode()


class ShardWriter:
    """Write a batch's samples and refusals to the store (atomically); return what was written.

    Rows already committed by an earlier run (status ``done``) are reported as skipped, not written.
    """

    def __init__(self, root: str):
        self.store = ShardStore(root)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from salad_ray.pipeline.records import quarantine_table, shard_table

        rows = _rows(batch)
        retries = {r["sample_id"]: int(_field(r, RETRIES) or 0) for r in rows}
        calls = {r["sample_id"]: [_field(r, name) for name in TTS_CALL] for r in rows}
        written = [
            {"kind": "skipped", "file": "", "sample_id": r["sample_id"]} for r in rows if r["status"] == DONE
        ]
        for kind, group, table in (
            ("shards", [r for r in rows if is_ok(r)], shard_table),
            ("quarantine", [r for r in rows if r["status"] not in (OK, DONE)], quarantine_table),
        ):
            if group:
                file = self.store.write(table(group), kind)
                written += [{"kind": kind, "file": file, "sample_id": r["sample_id"]} for r in group]
        for entry in written:
            entry[RETRIES] = retries[entry["sample_id"]]
            entry.update(zip(TTS_CALL, calls[entry["sample_id"]], strict=True))
        return pd.DataFrame(written, columns=MANIFEST_COLUMNS)
