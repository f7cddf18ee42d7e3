"""Spoken-cloze accuracy of a saved student, read through every frame and through CTC compression.

    python tools/experiments/warmup_cloze.py runs/local/students/warmup [TOP_K]

The `local` preset's benchmark (160 items, its voice, its prompts), scored as the run's evaluation
scores it (:func:`salad_ray.eval.suite.score_modes`), in one process without Ray: with the student's
own positions, with CTC compression forced on (when the student was saved without it), and with
shuffled audio; 95 % bootstrap intervals over items as in the report (salad_ray.eval.stats), and the
paired real - shuffled difference. Speech is cached in /tmp/salad-exp-cache.
"""

import sys
from pathlib import Path

import torch

from salad_ray.config import AdapterPositions, load_config
from salad_ray.eval.speech_cache import SpeechCache
from salad_ray.eval.stats import accuracy_interval, paired_accuracy_difference
from salad_ray.eval.suite import build_prompts, score_modes, shuffled_prompts, speak_prompts
from salad_ray.model.compress import ctc_compress
from salad_ray.model.student import SpeechLM


def cloze(config, student: SpeechLM, prompts) -> list[int]:
    """0/1 per item of the spoken cloze, in batches under the config's ``eval`` settings."""
    return score_modes(student, prompts, ["speech"], config)["correct"]["speech"]["fortune-cloze"]


def show(name: str, interval) -> None:
    print(f"{name}: {100 * interval.estimate:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]")


def report(config, student: SpeechLM, top_k: int = 8) -> None:
    """Print the student's spoken-cloze accuracy (own positions, CTC-forced when saved without it),
    with shuffled audio and the paired difference, each with its interval."""
    prompts = build_prompts(config, student.tokenizer, student.bos_id)
    speak_prompts(
        config, [p for v in prompts.values() for p in v], SpeechCache(config, Path("/tmp/salad-exp-cache"))
    )
    real = cloze(config, student, prompts)
    show(f"own positions ({student.models.adapter.positions.value})", accuracy_interval([real]))
    if student.models.adapter.positions == AdapterPositions.FRAMES:
        table = student._causal_lm().get_input_embeddings().weight
        frames = student.adapter_frames
        student.speech_embeddings = lambda audio: ctc_compress(frames(audio), table, top_k)
        real = cloze(config, student, prompts)
        show(f"CTC-compressed (top {top_k})", accuracy_interval([real]))
    shuffled = cloze(config, student, shuffled_prompts(prompts, config.seed))
    show("shuffled audio", accuracy_interval([shuffled]))
    show("real - shuffled (points)", paired_accuracy_difference([real], [shuffled]))


def main(student_dir: str, top_k: int = 8) -> None:
    report(load_config(preset="local"), SpeechLM.load(student_dir).eval(), top_k)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
