"""Stage-I-like distillation from a run's warm-up student at given learning rates, then the cloze.

    python tools/experiments/stage1_from_warmup.py RUN_DIR LR_ADAPTER LR_LLM STEPS

Reads the run's natural and text shards (teacher top-k included) and trains in one process without
Ray: batches of 4 drawn 2/3 natural, 1/3 text, bf16 autocast, AdamW under the WSD schedule, Eq. 4
with alpha = 1. LR_ADAPTER 0 freezes the adapter. Prints the spoken-cloze accuracy with real and with
shuffled audio, with intervals, as warmup_cloze.py does (its ``report``).
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from warmup_cloze import report  # the sibling script (sys.path[0] is this directory)

from salad_ray.batch import collate
from salad_ray.config import load_config
from salad_ray.model.student import SpeechLM
from salad_ray.objective import count_targets, distillation_loss
from salad_ray.pipeline.records import sample_from_row
from salad_ray.train.schedule import WSD


def shards(run_dir: Path, store: str):
    files = sorted((run_dir / "data" / store / "shards").glob("*.parquet"))
    return [sample_from_row(r) for f in files for r in pq.read_table(f).to_pylist()]


def main(run_dir: Path, lr_adapter: float, lr_llm: float, steps: int) -> None:
    torch.manual_seed(0)
    config = load_config(file=run_dir / "config.yaml")
    student = SpeechLM.load(run_dir / "students" / "warmup")
    natural, text = shards(run_dir, "natural"), shards(run_dir, "text")
    groups = [{"params": list(student.llm.parameters()), "lr": lr_llm}]
    if lr_adapter > 0:
        groups.append({"params": list(student.adapter.parameters()), "lr": lr_adapter})
    else:
        student.adapter.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.train.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WSD(steps, 10, 0.2))
    rng = np.random.default_rng(0)
    student.train()
    for step in range(steps):
        batch = [
            natural[rng.integers(len(natural))] if rng.random() < 2 / 3 else text[rng.integers(len(text))]
            for _ in range(4)
        ]
        n = sum(count_targets(s, student.frames) for s in batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            parts, _ = distillation_loss(student, collate(batch), alpha=1.0, temperature=1.0, normalizer=n)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.train.clip_norm)
        optimizer.step()
        schedule.step()
        if step % 20 == 0:
            print(f"step {step}: loss {parts.total.item():.3f}", flush=True)
    report(config, student.eval())


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
