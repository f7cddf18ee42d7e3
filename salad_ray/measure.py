"""Measure forgetting F, misalignment M and distillation KL D of a student on the held-out speech.

    python -m salad_ray.measure [--preset local] [--config FILE] [--set key=value ...]
                                [--student DIR] [--out FILE.json]

The held-out set is ``data.heldout``: broad-domain texts spread across domains, cut into speech and
text spans, the speech spans spoken by TTS (``data.heldout.voices`` in turn). The teacher is the
original LLM (``models.llm``) fed the pure text; the student is ``--student`` or, without it, the
untrained student of the config: its F, M and D are the starting point of the gap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from salad_ray.assets import AssetError, resolve
from salad_ray.batch import Sample
from salad_ray.config import ConfigError, RunConfig, add_config_arguments, load_config
from salad_ray.corpus import heldout_records
from salad_ray.eval.tables import nats
from salad_ray.metrics import GapSummary
from salad_ray.model.student import SpeechLM
from salad_ray.objective import samples_gap
from salad_ray.spoken import plan_text, speak, synthesis_settings
from salad_ray.teacher.backends import TransformersBackend
from salad_ray.tts import build_tts


def heldout_samples(config: RunConfig, tokenizer) -> list[Sample]:
    """The held-out spoken set of a config, synthesized (deterministic for a given config)."""
    heldout = config.data.heldout
    records = heldout_records(config.data, config.seed)
    tts = build_tts(config.tts)
    settings = synthesis_settings(config)
    samples = []
    for n, record in enumerate(tqdm(records, desc="speak held-out set", unit="text")):
        plan = plan_text(
            record.text_id, record.text, tokenizer, tokenizer.bos_token_id, config.interleave, config.seed
        )
        samples.append(speak(plan, tts, heldout.voices[n % len(heldout.voices)], settings, source="heldout"))
    return samples


def attach_teacher(samples: list[Sample], teacher: TransformersBackend, k: int, batch_size: int) -> None:
    for start in tqdm(range(0, len(samples), batch_size), desc="teacher top-k", unit="batch"):
        chunk = samples[start : start + batch_size]
        for sample, answer in zip(chunk, teacher.topk([s.ids for s in chunk], k), strict=True):
            sample.teacher_ids, sample.teacher_logprobs = answer.ids, answer.logprobs


def measure_gap(student: SpeechLM, samples: list[Sample], batch_size: int) -> GapSummary:
    return samples_gap(student, samples, batch_size, student.device, progress="measure F, M and D").summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salad_ray.measure", description=__doc__.split("\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--student", default=None, help="a saved student directory (default: untrained)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.preset, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    t0 = time.time()
    try:
        student = SpeechLM.load(args.student) if args.student else SpeechLM.from_config(config.models)
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    samples = heldout_samples(config, student.tokenizer)
    teacher = TransformersBackend(resolve(config.models.llm, "causal-lm"))
    attach_teacher(samples, teacher, config.distill.top_k, config.train.batch_size)
    teacher.close()
    summary = measure_gap(student, samples, config.train.batch_size)
    seconds = sum(len(a) for s in samples for a in s.audio) / 16_000
    result = {
        "preset": config.preset,
        "student": args.student or "untrained",
        "heldout_samples": len(samples),
        "heldout_speech_seconds": round(seconds, 1),
        "top_k": config.distill.top_k,
        **summary.as_dict(),
        "wall_seconds": round(time.time() - t0, 1),
    }
    print(
        f"\n{result['student']} student on {len(samples)} held-out samples ({seconds:.0f} s of speech):\n"
        f"  forgetting    F = {nats(summary.f_per_token)} nats/token  ({summary.f_per_sample:.2f} per sample)\n"
        f"  misalignment  M = {nats(summary.m_per_token)} nats/token  ({summary.m_per_sample:.2f} per sample)\n"
        f"  distillation  D = {nats(summary.d_per_token)} nats/token  ({summary.d_per_sample:.2f} per sample)"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
