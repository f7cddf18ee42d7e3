"""The evaluation of a run: the text-speech gap on spoken multiple-choice benchmarks.

Systems and the modes they are scored in, on the same items and the same prompts:

    original LLM      text       the original text LLM (the teacher's weights) fed the prompt as text
    cascade           cascade    Whisper's transcript of the spoken prompt, fed to the original LLM
    untrained student speech     a fresh student (original LLM, adapter seeded by ``seed``): the floor
    each student      speech     the student fed the spoken prompt (speech spans, then the options)
                      text       the student fed the prompt as text (text-side forgetting)
                      shuffled   speech mode with every item's spoken context taken from another item
                                 (a seeded derangement: none keeps its own), and held-out M with every
                                 sample's speech from another sample (salad_ray.eval.controls)

    gap        = accuracy(original LLM, text) - accuracy(system, speech or cascade)
    forgetting = accuracy(original LLM, text) - accuracy(student, text)

Every distinct spoken piece is synthesized once (``eval.voice``) and transcribed once, in batches,
and both are cached in the output's ``cache/`` (:mod:`salad_ray.eval.speech_cache`), so reruns and
every system share them (a run fills the cache ahead, :func:`prepare_speech`, while it trains);
the frozen encoder's features are computed once per evaluation. Students are also measured on the
held-out spoken set: F, M and the distillation KL D per token, overall, per domain, and per sample
(:func:`heldout_gap`), which the report's paired intervals resample.

The result is a JSON-able dict (:func:`evaluate`), saved by :func:`run_eval` as ``results.json``
(a run scores the systems that need no trained student earlier, :func:`run_baselines`);
:mod:`salad_ray.eval.tables` turns it into the report's tables, intervals and plots. Beyond the
accuracies, it keeps what the intervals need:

    items[task]                               the item ids, in order
    systems[name].correct[mode][task]         0/1 per item, in that order
    systems[name].heldout.per_sample          ids, domains, f_sum, f_targets, m_sum, m_targets, d_sum
    systems[name].shuffled                    the control's accuracy, correct and heldout (final students)
    systems[name].role, stage, step           untrained / final / round; where training left it
    heldout_only                              the held-out-only domains (data.heldout_only)
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from salad_ray.batch import Sample
from salad_ray.config import RunConfig
from salad_ray.eval.controls import derange, shuffled_audio
from salad_ray.eval.items import Item, load_items, shots_for
from salad_ray.eval.likelihood import Prompt, fit_prompt, predict, prompt_tokens, with_donor_context
from salad_ray.eval.speech_cache import CachedEncoder, SpeechCache
from salad_ray.files import write_text
from salad_ray.metrics import per_token
from salad_ray.model.student import SpeechLM
from salad_ray.objective import samples_gap
from salad_ray.pipeline.records import sample_from_row
from salad_ray.pipeline.shards import ShardStore
from salad_ray.precision import autocast
from salad_ray.rundir import (
    EVAL_BASELINES,
    EVAL_CACHE,
    EVAL_PROGRESS,
    EVAL_RESULTS,
    RunDir,
    final_milestones,
    round_milestones,
)

ORIGINAL = "original LLM"
CASCADE = "cascade"
UNTRAINED = "untrained student"


@dataclass(frozen=True)
class StudentSpec:
    """A student to evaluate: its saved directory, its role and where training left it.

    ``role``: ``final`` (every mode, the controls, a row of Table 3) or ``round`` (an intermediate
    student: speech and held-out only, for the learning curve). ``stage`` and ``step`` name its
    training records in ``metrics.jsonl`` (``stage1`` or ``stage2-<arm>``, that stage's step).
    """

    path: Path
    role: str = "final"
    stage: str | None = None
    step: int | None = None


def run_students(config: RunConfig, run: RunDir) -> dict[str, StudentSpec]:
    """A run's students to evaluate, by label: the final ones, then (``eval.round_students``) each
    earlier stage-II round's, with where training left them."""
    final = [(m, "final") for m in final_milestones(config)]
    rounds = [(m, "round") for m in round_milestones(config)] if config.eval.round_students else []
    return {m.label: StudentSpec(run.student(m), role, m.job, m.step) for m, role in final + rounds}


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


def speak_prompts(
    config: RunConfig, prompts: list[Prompt], cache: SpeechCache | None = None
) -> dict[str, str]:
    """The audio of every spoken piece of every prompt; each distinct piece synthesized once.
    Returns the pieces the TTS could not speak, with why: their prompts get no audio."""
    cache = cache or SpeechCache(config)
    audio = cache.speak([t for p in prompts for t in p.spoken_texts()])
    for prompt in prompts:
        if all(t in audio for t in prompt.spoken_texts()):
            prompt.audio = [audio[t] for t in prompt.spoken_texts()]
    return cache.unspeakable


# Whisper closes every segment with a full stop, also a segment cut mid-sentence ("you believe."),
# which would end the cascade's prompt where the spoken one runs on; the cascade drops it.
SEGMENT_STOP = re.compile(r"(\.|…)+$")


def transcribe_prompts(config: RunConfig, prompts: list[Prompt], cache: SpeechCache | None = None) -> None:
    """Whisper transcripts of every spoken piece (the cascade's input), final full stops dropped;
    each distinct piece transcribed once, ``eval.asr_batch_size`` pieces per call."""
    cache = cache or SpeechCache(config)
    heard = cache.transcribe([t for p in prompts for t in p.spoken_texts()], config.eval.asr_batch_size)
    for prompt in prompts:
        prompt.transcripts = [SEGMENT_STOP.sub("", heard[t]).strip() for t in prompt.spoken_texts()]


def voice_prompts(
    config: RunConfig, prompts: dict[str, list[Prompt]], cache: SpeechCache, say: Callable[[str], None]
) -> tuple[dict[str, list[Prompt]], dict[str, list[str]], dict[str, str]]:
    """Speak every prompt's pieces, then transcribe them for the cascade (``say`` hears each step).

    Returns the prompts whose speech could be made, by task; the items dropped, by task (an item
    whose speech cannot be made leaves every system's benchmark, so all score the same items); and
    why each unspeakable piece was."""
    say(f"speak {sum(len(ps) for ps in prompts.values())} prompts")
    unspeakable = speak_prompts(config, [p for ps in prompts.values() for p in ps], cache)
    dropped = {task: [p.item.item_id for p in ps if p.audio is None] for task, ps in prompts.items()}
    kept = {task: [p for p in ps if p.audio is not None] for task, ps in prompts.items()}
    say("transcribe (cascade)")
    transcribe_prompts(config, [p for ps in kept.values() for p in ps], cache)
    return kept, dropped, unspeakable


def shuffled_prompts(prompts: dict[str, list[Prompt]], seed: int) -> dict[str, list[Prompt]]:
    """The shuffled-audio control: within each task, item i is heard with item pi(i)'s spoken context
    (pi a seeded derangement, :func:`~salad_ray.eval.controls.derange`); examples and options stay."""
    out = {}
    for task, task_prompts in prompts.items():
        if len(task_prompts) < 2:
            continue
        donors = derange(len(task_prompts), seed)
        out[task] = [
            with_donor_context(p, task_prompts[d]) for p, d in zip(task_prompts, donors, strict=True)
        ]
    return out


def accuracy(predictions: np.ndarray, items: list[Item]) -> float:
    return float(np.mean(correctness(predictions, items)))


def correctness(predictions: np.ndarray, items: list[Item]) -> list[int]:
    """1 where the prediction is the item's answer, else 0, item by item."""
    return [int(p == item.answer) for p, item in zip(predictions, items, strict=True)]


def score_modes(
    model: SpeechLM, prompts: dict[str, list[Prompt]], modes: list[str], config: RunConfig
) -> dict[str, dict]:
    """``accuracy[mode][task]`` and ``correct[mode][task]`` (0/1 per item, in item order), in
    batches of ``eval.batch_size`` prompts under ``eval.precision``."""
    acc: dict[str, dict[str, float]] = {}
    correct: dict[str, dict[str, list[int]]] = {}
    for mode in modes:
        acc[mode], correct[mode] = {}, {}
        for task, task_prompts in prompts.items():
            with autocast(config.eval.precision, model.device):
                predictions = predict(model, task_prompts, mode, config.eval.batch_size)
            hits = correctness(predictions, [p.item for p in task_prompts])
            correct[mode][task] = hits
            acc[mode][task] = float(np.mean(hits))
    return {"accuracy": acc, "correct": correct}


def heldout_samples(store: Path) -> list[tuple[Sample, str]]:
    """(sample, domain) of every committed held-out sample, in sample-id order."""
    out = []
    for path in ShardStore(store).files("shards"):
        for row in pq.read_table(path).to_pylist():
            out.append((sample_from_row(row), row["domain"]))
    return sorted(out, key=lambda x: x[0].sample_id)


HELDOUT_SUMS = ("f_sum", "f_targets", "m_sum", "m_targets", "d_sum")
"""Per held-out sample, as results.json keeps them (``d_sum`` absent in results from before D was kept)."""


def heldout_gap(student: SpeechLM, samples: list[tuple[Sample, str]], batch_size: int) -> dict:
    """F, M and D per token on the held-out set, overall, per domain and per sample (sums and counts;
    D, the distillation KL, runs over M's targets, :mod:`salad_ray.metrics`)."""
    gap = samples_gap(student, [s for s, _ in samples], batch_size, student.device)
    per_sample = {
        key: [float(v) for v in values] for key, values in zip(HELDOUT_SUMS, gap.tensors(), strict=True)
    }
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(HELDOUT_SUMS)))
    for n, (_, domain) in enumerate(samples):
        values = np.array([per_sample[k][n] for k in HELDOUT_SUMS])
        sums[domain] += values
        sums["all"] += values

    def fm(v: np.ndarray) -> dict[str, float]:
        return {
            "f": per_token([v[0]], [v[1]]),
            "m": per_token([v[2]], [v[3]]),
            "d": per_token([v[4]], [v[3]]),
            "targets": v[3],
        }

    return {
        **fm(sums.pop("all")),
        "domains": {d: fm(v) for d, v in sorted(sums.items())},
        "per_sample": {
            "ids": [s.sample_id for s, _ in samples],
            "domains": [d for _, d in samples],
            **per_sample,
        },
    }


def _shuffled_heldout(student: SpeechLM, held: list[tuple[Sample, str]], control, batch: int) -> dict:
    """Held-out F and M with every sample's speech from another sample, under the real samples' ids."""
    out = heldout_gap(student, control, batch)
    out["per_sample"]["ids"] = [s.sample_id for s, _ in held]
    return out


def _share_encoder(student: SpeechLM, encoder: CachedEncoder, config: RunConfig) -> None:
    """Give the student the evaluation's cached encoder when its own is the same frozen model (the
    run's ``models.encoder``), else a cache of its own."""
    same = student.models.encoder == config.models.encoder
    student.encoder = encoder if same else CachedEncoder(student.encoder)


@dataclass
class Bench:
    """What every system is scored on, prepared once per process: the voiced prompts by task, the
    items dropped as unspeakable, the held-out samples, and the shuffled-audio controls of both."""

    prompts: dict[str, list[Prompt]]
    dropped: dict[str, list[str]]
    unspeakable: dict[str, str]
    held: list[tuple[Sample, str]]
    shuffled: dict[str, list[Prompt]]
    held_control: list[tuple[Sample, str]]


def prepare_bench(
    config: RunConfig,
    tokenizer,
    bos_id: int | None,
    heldout: Path | None,
    cache: SpeechCache,
    say,
    controls: bool,
) -> Bench:
    """The benchmarks' prompts voiced from ``cache``, the held-out samples, and (``controls``) their
    shuffled-audio versions."""
    prompts = build_prompts(config, tokenizer, bos_id)
    prompts, dropped, unspeakable = voice_prompts(config, prompts, cache, say)
    held = heldout_samples(heldout) if heldout is not None else []
    shuffled = shuffled_prompts(prompts, config.seed) if controls else {}
    held_control: list[tuple[Sample, str]] = []
    if controls and sum(bool(s.audio) for s, _ in held) >= 2:
        control_samples = shuffled_audio([s for s, _ in held], config.seed)
        held_control = list(zip(control_samples, [d for _, d in held], strict=True))
    return Bench(prompts, dropped, unspeakable, held, shuffled, held_control)


def _device() -> str:
    """Where the evaluation runs: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _original(config: RunConfig, device: str) -> SpeechLM:
    """The original LLM as a student before training (its adapter seeded by ``seed``: the untrained
    student), with a cached encoder the students of the same evaluation share."""
    torch.manual_seed(config.seed)
    original = SpeechLM.from_config(config.models).to(device)
    original.encoder = CachedEncoder(original.encoder)
    return original


def score_baselines(config: RunConfig, original: SpeechLM, bench: Bench, untrained: bool, say) -> dict:
    """The systems that need no trained student: the original LLM on text, the cascade and
    (``untrained``) the untrained student on speech and the held-out set."""
    systems: dict[str, dict] = {}
    say(ORIGINAL)
    systems[ORIGINAL] = {"kind": "original", **score_modes(original, bench.prompts, ["text"], config)}
    say(CASCADE)
    systems[CASCADE] = {"kind": "cascade", **score_modes(original, bench.prompts, ["cascade"], config)}
    if untrained:
        say(UNTRAINED)
        systems[UNTRAINED] = {
            "kind": "student",
            "role": "untrained",
            "stage": None,
            "step": 0,
            **score_modes(original, bench.prompts, ["speech"], config),
            **({"heldout": heldout_gap(original, bench.held, config.eval.batch_size)} if bench.held else {}),
        }
    return systems


def score_student(config: RunConfig, spec: StudentSpec, bench: Bench, encoder: CachedEncoder, device) -> dict:
    """One student: speech (and, when final, text and the shuffled-audio controls) on the
    benchmarks, and the held-out gap."""
    student = SpeechLM.load(spec.path, device=device)
    _share_encoder(student, encoder, config)
    final = spec.role == "final"
    system = {
        "kind": "student",
        "role": spec.role,
        "path": str(spec.path),
        "stage": spec.stage,
        "step": spec.step,
        **score_modes(student, bench.prompts, ["speech", "text"] if final else ["speech"], config),
    }
    batch = config.eval.batch_size
    if bench.held:
        system["heldout"] = heldout_gap(student, bench.held, batch)
    if final and bench.shuffled:
        system["shuffled"] = score_modes(student, bench.shuffled, ["speech"], config)
        if bench.held_control:
            system["shuffled"]["heldout"] = _shuffled_heldout(student, bench.held, bench.held_control, batch)
    return system


def evaluate(
    config: RunConfig,
    students: Mapping[str, Path | StudentSpec],
    heldout: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    cache_dir: Path | None = None,
    baselines: dict[str, dict] | None = None,
) -> dict:
    """Evaluate the original LLM, the cascade, the untrained student (when there are students) and
    every student (module docstring); ``progress`` hears what is being done; spoken pieces and
    transcripts are cached in ``cache_dir`` (None: in memory). ``baselines``: the systems of
    :func:`score_baselines` scored already (a run's ``eval/baselines`` phase), not scored again."""
    t0 = time.time()
    e = config.eval
    specs = {n: s if isinstance(s, StudentSpec) else StudentSpec(Path(s)) for n, s in students.items()}
    device = _device()
    original = _original(config, device)
    untrained = e.untrained and bool(specs)
    steps = 2 + (0 if baselines is not None else 2 + untrained) + len(specs)
    step = itertools.count(1)

    def say(what: str) -> None:
        progress(f"{next(step)}/{steps} {what}")

    controls = e.shuffled_audio and any(s.role == "final" for s in specs.values())
    cache = SpeechCache(config, cache_dir)
    bench = prepare_bench(config, original.tokenizer, original.bos_id, heldout, cache, say, controls)
    systems = (
        dict(baselines) if baselines is not None else score_baselines(config, original, bench, untrained, say)
    )
    encoder = original.encoder
    del original
    for name, spec in tqdm(specs.items(), desc="evaluate students", unit="student"):
        say(name)
        systems[name] = score_student(config, spec, bench, encoder, device)
    return {
        "tasks": {task: len(task_prompts) for task, task_prompts in bench.prompts.items()},
        "items": {
            task: [p.item.item_id for p in task_prompts] for task, task_prompts in bench.prompts.items()
        },
        "unspoken": {
            "items": {task: ids for task, ids in bench.dropped.items() if ids},
            "reasons": sorted(set(bench.unspeakable.values())),
        },
        "chance": {
            task: float(np.mean([1 / len(p.item.options) for p in task_prompts]))
            for task, task_prompts in bench.prompts.items()
        },
        "shots": e.shots,
        "voice": e.voice or config.tts.voices[0],
        "seed": config.seed,
        "heldout_only": list(config.data.heldout_only),
        "systems": systems,
        "wall_seconds": time.time() - t0,
    }


def prepare_speech(config: RunConfig, out: Path) -> None:
    """Speak and transcribe every benchmark's spoken pieces into ``out``'s cache, as
    :func:`evaluate` would (same prompts, same cache keys). No student is needed for either, and the
    cascade's ASR is the evaluation's slow part on a CPU: a run does this while its students train."""
    from transformers import AutoTokenizer

    from salad_ray.assets import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(config.models.llm, "causal-lm"))
    prompts = build_prompts(config, tokenizer, tokenizer.bos_token_id)
    voice_prompts(config, prompts, SpeechCache(config, out / EVAL_CACHE), say=lambda what: None)


def run_baselines(config: RunConfig, heldout: Path | None, out: Path) -> Path:
    """Score the systems that need no trained student (:func:`score_baselines`, the untrained student
    when ``eval.untrained``) and write them to ``out/baselines.json`` atomically; returns its path.
    A run does this beside stage I, whose one trainer leaves part of a laptop's cores idle."""
    out.mkdir(parents=True, exist_ok=True)
    device = _device()
    original = _original(config, device)
    cache = SpeechCache(config, out / EVAL_CACHE)
    bench = prepare_bench(config, original.tokenizer, original.bos_id, heldout, cache, lambda _: None, False)
    systems = score_baselines(config, original, bench, config.eval.untrained, lambda _: None)
    write_text(out / EVAL_BASELINES, json.dumps(systems, indent=2))
    return out / EVAL_BASELINES


def run_eval(
    config: RunConfig, students: Mapping[str, Path | StudentSpec], heldout: Path | None, out: Path
) -> Path:
    """Evaluate and write ``out/results.json`` atomically (speech cached in ``out/cache``; the
    systems of ``out/baselines.json`` taken as scored when it is there); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    baselines = out / EVAL_BASELINES
    result = evaluate(
        config,
        students,
        heldout,
        lambda line: (out / EVAL_PROGRESS).write_text(line),
        cache_dir=out / EVAL_CACHE,
        baselines=json.loads(baselines.read_text()) if baselines.is_file() else None,
    )
    (out / EVAL_PROGRESS).unlink(missing_ok=True)
    write_text(out / EVAL_RESULTS, json.dumps(result, indent=2))
    return out / EVAL_RESULTS
