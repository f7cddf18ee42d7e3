"""Teacher top-k in the shards: bytes per text token with float32 and with float16 log-probs, and
what the rounding does to the distillation target (and, given a trained student, to F, M and KL).

    python benchmarks/topk_storage.py [--sequences 48] [--tokens 128]
                                      [--student DIR --heldout STORE]

The local preset's teacher (transformers, in process) scores the same fortune token sequences once;
its top-k (ids int32, log-probs float32) is written as the shard store writes it (Parquet, zstd)
twice: log-probs as float32 (before) and as float16 (the shard schema now). Both are measured in
the same run.

The target's change per position is KL(q32 || q16) of the top-k distributions renormalised from the
two log-prob arrays. With ``--student`` and ``--heldout`` (a run's
held-out shard store), the held-out F, M and distillation KL of that fixed student are measured
against the teacher's float32 top-k of the held-out texts and against it rounded to float16, beside
each metric's sampling noise (95 % bootstrap half-width over the held-out samples).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from common import write_result
from teacher_throughput import workload

from salad_ray.pipeline.records import SHARD_SCHEMA


def parquet_bytes(ids: list[np.ndarray], logprobs: list[np.ndarray], logprob_type) -> int:
    """The size of the teacher columns of ``ids``/``logprobs`` as the shard writer stores them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "teacher_ids": pa.array([a.tolist() for a in ids], type=SHARD_SCHEMA.field("teacher_ids").type),
            "teacher_logprobs": pa.array(
                [a.tolist() for a in logprobs], type=pa.list_(pa.list_(logprob_type))
            ),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.tell()


def target_kl(logprobs: np.ndarray) -> np.ndarray:
    """KL(q32 || q16) per position: q the top-k distribution renormalised from the log-probs."""
    import torch

    lp32 = torch.from_numpy(logprobs.astype(np.float32))
    lp16 = torch.from_numpy(logprobs.astype(np.float16).astype(np.float32))
    q32, q16 = torch.log_softmax(lp32, -1), torch.log_softmax(lp16, -1)
    return (q32.exp() * (q32 - q16)).sum(-1).numpy()


def bootstrap_half_width(sums, counts, draws: int = 2000, seed: int = 0) -> float:
    """Half-width of the 95 % bootstrap interval (over samples) of Σ sums / Σ counts."""
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(sums), size=(draws, len(sums)))
    ratios = sums[picks].sum(1) / np.maximum(counts[picks].sum(1), 1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float((high - low) / 2)


def fixed_student(student: Path, heldout: Path, backend, k: int, batch_size: int) -> dict:
    """Held-out F, M and distillation KL of one student against the teacher's float32 top-k (scored
    again here, so a store written with float16 serves too) and against the same rounded to float16;
    beside the change, each metric's sampling noise: the half-width of its 95 % bootstrap interval
    over the held-out samples. M compares the student with itself and reads no teacher output."""
    import dataclasses

    import torch

    from salad_ray.model.student import SpeechLM
    from salad_ray.objective import samples_gap
    from salad_ray.pipeline.shards import ShardStore

    model = SpeechLM.load(student).eval()
    samples = list(ShardStore(heldout).samples())
    answers = [
        a for i in range(0, len(samples), 8) for a in backend.topk([s.ids for s in samples[i : i + 8]], k)
    ]
    exact = [
        dataclasses.replace(
            s, teacher_ids=a.ids.astype(np.int32), teacher_logprobs=a.logprobs.astype(np.float32)
        )
        for s, a in zip(samples, answers, strict=True)
    ]
    rounded = [
        dataclasses.replace(s, teacher_logprobs=s.teacher_logprobs.astype(np.float16).astype(np.float32))
        for s in exact
    ]
    out: dict = {"samples": len(samples)}
    for name, chosen in (("float32", exact), ("float16", rounded)):
        gap = samples_gap(model, chosen, batch_size, torch.device("cpu"), progress=f"held-out, {name}")
        parts = {
            "heldout_f": (gap.f_sums, gap.f_counts),
            "heldout_m": (gap.m_sums, gap.m_counts),
            "distill_kl": (gap.d_sums, gap.m_counts),
        }
        out[name] = {
            key: float(sums.sum() / counts.sum().clamp(min=1)) for key, (sums, counts) in parts.items()
        }
        if name == "float32":
            out["noise_95_half_width"] = {key: bootstrap_half_width(*pair) for key, pair in parts.items()}
    out["change"] = {key: out["float16"][key] - out["float32"][key] for key in out["float32"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--student", type=Path, default=None, help="a saved student (with --heldout)")
    parser.add_argument("--heldout", type=Path, default=None, help="a held-out shard store (with --student)")
    args = parser.parse_args()
    if (args.student is None) != (args.heldout is None):
        parser.error("--student and --heldout go together")

    import pyarrow as pa
    from transformers import AutoTokenizer

    from salad_ray.assets import resolve
    from salad_ray.config import load_config
    from salad_ray.teacher.backends import BackendSpec, build_backend

    config = load_config("local", overrides=["teacher.backend=transformers"])
    k = config.distill.top_k
    tokenizer = AutoTokenizer.from_pretrained(resolve(config.models.llm, "causal-lm"))
    sequences = workload(tokenizer, args.sequences, args.tokens)
    backend = build_backend(BackendSpec.from_config(config))
    answers = [a for i in range(0, len(sequences), 8) for a in backend.topk(sequences[i : i + 8], k)]
    ids = [a.ids.astype(np.int32) for a in answers]
    logprobs = [a.logprobs.astype(np.float32) for a in answers]
    tokens = sum(len(a) for a in ids)

    before = parquet_bytes(ids, logprobs, pa.float32())
    after = parquet_bytes(ids, logprobs, pa.float16())
    kl = target_kl(np.concatenate([lp[1:] for lp in logprobs]))  # row 0 predicts nothing
    result = {
        "workload": {"sequences": args.sequences, "tokens_per_sequence": args.tokens, "k": k},
        "bytes_per_token": {"float32": before / tokens, "float16": after / tokens},
        "ratio_float16_to_float32": after / before,
        "raw_bytes_per_token": {"float32": k * 8, "float16": k * 6},
        "target_kl_q32_q16": {"mean": float(kl.mean()), "max": float(kl.max())},
    }
    if args.student is not None:
        result["fixed_student"] = {
            "student": str(args.student),
            "heldout": str(args.heldout),
            **fixed_student(args.student, args.heldout, backend, k, config.eval.batch_size),
        }
    backend.close()
    write_result("topk_storage", result)


if __name__ == "__main__":
    main()
