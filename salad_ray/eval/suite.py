"""The evaluation of a run: the text-speech gap on spoken multiple-choice benchmarks.

Systems and the modes they are scored in, on the same items and the same prompts:

    original LLM      text       the original text LLM (the teacher's weights) fed the prompt as text
    cascade           cascade    Whisper's transcript of the spoken prompt, fed to the original LLM
    each student      speech     the student fed the spoken prompt (speech spans, then the options)
                      text       the student fed the prompt as text (text-side forgetting)

    gap        = accuracy(original LLM, text) - accuracy(system, speech or cascade)
    forgetting = accuracy(original LLM, text) - accuracy(student, text)

Every spoken piece is synthesized once (``eval.voice``) and transcribed once, then shared by every
system. Students are also measured on the held-out broad-domain spoken set: F and M per token,
overall and per domain (:func:`heldout_gap`).

The result is a JSON-able dict (:func:`evaluate`), saved by :func:`run_eval` as ``results.json``;
:mod:`salad_ray.eval.tables` turns it into the report's tables and plots.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from salad_ray.assets import resolve
from salad_ray.batch import collate
from salad_ray.config import RunConfig
from salad_ray.eval.items import Item, load_items, shots_for
from salad_ray.eval.likelihood import Prompt, fit_prompt, predict, prompt_tokens
from salad_ray.model.student import SpeechLM
from salad_ray.objective import batch_gap
from salad_ray.pipeline.records import sample_from_row
from salad_ray.pipeline.shards import ShardStore

ORIGINAL = "original LLM"
CASCADE = "cascade"
PROGRESS_FILE = "progress.txt"  # the system being scored, for the driver's status line


def build_prompts(config: RunConfig, tokenizer, bos_id: int | None) -> dict[str, list[Prompt]]:
    """Every benchmark's prompts, few-shot examples fitted to ``interleave.max_tokens``."""
    e = config.eval
    out = {}
    for spec in e.benchmarks:
        items = load_items(spec, config.seed)
        if not items:
            raise ValueError(f"benchmark {spec.name} has no items")
        out[spec.name] = [
            fit_prompt(
                item,
                shots_for(items, n, e.shots, config.seed),
                e.span_words,
                config.interleave.max_tokens,
                lambda p: prompt_tokens(tokenizer, bos_id, p),
            )
            for n, item in enumerate(items)
        ]
    return out


def speak_prompts(config: RunConfig, prompts: list[Prompt]) -> None:
    """Synthesize the spoken pieces of every prompt (one TTS call per piece)."""
    from salad_ray.tts.base import build_tts

    tts = build_tts(config.tts, device="cuda" if torch.cuda.is_available() else "cpu")
    voice = config.eval.voice or config.tts.voices[0]
    for prompt in tqdm(prompts, desc="speak benchmark prompts", unit="item"):
        prompt.audio = tts.synthesize(prompt.spoken_texts(), voice)


# Whisper closes every segment with a full stop, also a segment cut mid-sentence ("you believe."),
# which would end the cascade's prompt where the spoken one runs on; the cascade drops it.
SEGMENT_STOP = re.compile(r"(\.|…)+$")


def transcribe_prompts(config: RunConfig, prompts: list[Prompt]) -> None:
    """Whisper transcripts of every spoken piece (the cascade's input), final full stops dropped."""
    from salad_ray.asr import WhisperASR

    asr = WhisperASR(resolve(config.models.asr), beam_size=config.eval.asr_beam_size)
    for prompt in tqdm(prompts, desc="transcribe (cascade)", unit="item"):
        prompt.transcripts = [SEGMENT_STOP.sub("", t).strip() for t in asr.transcribe(prompt.audio)]


def accuracy(predictions: np.ndarray, items: list[Item]) -> float:
    return float(np.mean([p == item.answer for p, item in zip(predictions, items, strict=True)]))


def score_modes(
    model: SpeechLM, prompts: dict[str, list[Prompt]], modes: list[str]
) -> dict[str, dict[str, float]]:
    """Accuracy per mode and task."""
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        out[mode] = {}
        for task, task_prompts in prompts.items():
            predictions = predict(model, task_prompts, mode)
            out[mode][task] = accuracy(predictions, [p.item for p in task_prompts])
    return out


def heldout_samples(store: Path) -> list[tuple]:
    """(sample, domain) of every committed held-out sample."""
    out = []
    for path in ShardStore(store).files("shards"):
        for row in pq.read_table(path).to_pylist():
            out.append((sample_from_row(row), row["domain"]))
    return out


@torch.no_grad()
def heldout_gap(student: SpeechLM, samples: list[tuple], batch_size: int) -> dict:
    """F and M per token on the held-out set, overall and per domain."""
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))  # f_sum, f_count, m_sum, m_count
    student.eval()
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        gap = batch_gap(student, collate([s for s, _ in chunk]).to(student.device))
        for b, (_, domain) in enumerate(chunk):
            values = [float(t[b]) for t in (gap.f_sums, gap.f_counts, gap.m_sums, gap.m_counts)]
            sums[domain] += values
            sums["all"] += values

    def fm(v: np.ndarray) -> dict[str, float]:
        return {"f": v[0] / max(v[1], 1), "m": v[2] / max(v[3], 1), "targets": v[3]}

    return {
        **fm(sums.pop("all")),
        "domains": {d: fm(v) for d, v in sorted(sums.items())},
    }


def evaluate(
    config: RunConfig,
    students: dict[str, Path],
    heldout: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Evaluate the original LLM, the cascade and every student (module docstring); ``progress``
    hears what is being done."""
    t0 = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = config.eval.batch_size
    original = SpeechLM.from_config(config.models).to(device)  # untrained: its LLM is the original
    prompts = build_prompts(config, original.tokenizer, original.bos_id)
    flat = [p for task in prompts.values() for p in task]
    steps = 4 + len(students)
    progress(f"1/{steps} speak {len(flat)} prompts")
    speak_prompts(config, flat)
    progress(f"2/{steps} transcribe (cascade)")
    transcribe_prompts(config, flat)
    held = heldout_samples(heldout) if heldout is not None else []
    progress(f"3/{steps} {ORIGINAL}")
    systems = {ORIGINAL: {"kind": "original", "accuracy": score_modes(original, prompts, ["text"])}}
    progress(f"4/{steps} {CASCADE}")
    systems[CASCADE] = {"kind": "cascade", "accuracy": score_modes(original, prompts, ["cascade"])}
    del original
    for n, (name, path) in enumerate(tqdm(students.items(), desc="evaluate students", unit="student"), 5):
        progress(f"{n}/{steps} {name}")
        student = SpeechLM.load(path, device=device)
        systems[name] = {
            "kind": "student",
            "path": str(path),
            "accuracy": score_modes(student, prompts, ["speech", "text"]),
            **({"heldout": heldout_gap(student, held, batch)} if held else {}),
        }
        del student
    return {
        "tasks": {task: len(task_prompts) for task, task_prompts in prompts.items()},
        "chance": {
            task: float(np.mean([1 / len(p.item.options) for p in task_prompts]))
            for task, task_prompts in prompts.items()
        },
        "shots": config.eval.shots,
        "voice": config.eval.voice or config.tts.voices[0],
        "systems": systems,
        "wall_seconds": time.time() - t0,
    }


def run_eval(config: RunConfig, students: dict[str, Path], heldout: Path | None, out: Path) -> Path:
    """Evaluate and write ``out/results.json`` atomically; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate(config, students, heldout, lambda line: (out / PROGRESS_FILE).write_text(line))
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "results.json")
    return out / "results.json"
