"""Where the student's outputs meet the teacher's: the training objective and the gap of a batch.

Rows are gathered before the vocabulary projection, so only target rows ever become (N, V) logits.
The formulas themselves live in :mod:`salad_ray.losses` and :mod:`salad_ray.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from salad_ray.batch import Batch
from salad_ray.interleave import MixedLayout, text_rows
from salad_ray.losses import LossParts, SparseTargets, salad_loss
from salad_ray.metrics import forgetting_rows, misalignment_rows, per_sample
from salad_ray.model.student import SpeechLM


@dataclass(frozen=True)
class Rows:
    """Flattened target rows of a batch: sample index, row in the flattened (B * L) hidden states, w index."""

    sample: torch.Tensor
    flat: torch.Tensor
    w: torch.Tensor

    def __len__(self) -> int:
        return self.sample.numel()


def mixed_rows(layouts: list[MixedLayout], c_len: int) -> Rows:
    """Text targets of c: row ``c_rows`` of sample b predicts w[w_rows]."""
    sample = np.concatenate([np.full(len(lay.c_rows), b) for b, lay in enumerate(layouts)])
    flat = np.concatenate([b * c_len + lay.c_rows for b, lay in enumerate(layouts)])
    w = np.concatenate([lay.w_rows for lay in layouts])
    return Rows(*(torch.from_numpy(a.astype(np.int64)) for a in (sample, flat, w)))


def pure_text_rows(batch: Batch) -> Rows:
    """Every predicted position of w: row i - 1 of sample b predicts w[i]."""
    lw = batch.w_ids.shape[1]
    parts = [(b, *text_rows(int(n))) for b, n in enumerate(batch.w_lens)]
    sample = np.concatenate([np.full(len(r), b) for b, r, _ in parts])
    flat = np.concatenate([b * lw + r for b, r, _ in parts])
    w = np.concatenate([i for _, _, i in parts])
    return Rows(*(torch.from_numpy(a.astype(np.int64)) for a in (sample, flat, w)))


def teacher_at(batch: Batch, rows: Rows) -> SparseTargets:
    if batch.teacher_ids is None or batch.teacher_logprobs is None:
        raise ValueError("this batch carries no teacher top-k; ask the teacher first")
    return SparseTargets(batch.teacher_ids[rows.sample, rows.w], batch.teacher_logprobs[rows.sample, rows.w])


def distillation_loss(
    student: SpeechLM, batch: Batch, *, alpha: float, temperature: float, normalizer: float | torch.Tensor
) -> tuple[LossParts, int]:
    """Eq. 4 on the mixed contexts of a batch; returns the parts and the number of target rows."""
    hidden, _, layouts = student.mixed_hidden(batch)
    rows = mixed_rows(layouts, hidden.shape[1])
    device = hidden.device
    logits = student.logits(hidden.flatten(0, 1)[rows.flat.to(device)])
    targets = teacher_at(batch, rows)
    targets = SparseTargets(targets.ids.to(device), targets.logprobs.to(device))
    target_ids = batch.w_ids[rows.sample, rows.w].to(device)
    parts = salad_loss(
        logits, targets, target_ids, alpha=alpha, temperature=temperature, normalizer=normalizer
    )
    return parts, len(rows)


@dataclass(frozen=True)
class BatchGap:
    """Per-sample sums and counts of F and M for one batch, (B,) each."""

    f_sums: torch.Tensor
    f_counts: torch.Tensor
    m_sums: torch.Tensor
    m_counts: torch.Tensor


@torch.no_grad()
def batch_gap(student: SpeechLM, batch: Batch) -> BatchGap:
    """F (student on w vs teacher) and M (student on w vs student on c) of every sample in a batch."""
    n = len(batch)
    text_hidden = student.text_hidden(batch).flatten(0, 1)  # (B * Lw, H)
    device = text_hidden.device
    lw = batch.w_ids.shape[1]

    f = pure_text_rows(batch)
    teacher = teacher_at(batch, f)
    f_rows = forgetting_rows(
        SparseTargets(teacher.ids.to(device), teacher.logprobs.to(device)),
        student.logits(text_hidden[f.flat.to(device)]),
    )

    mixed_hidden, _, layouts = student.mixed_hidden(batch)
    m = mixed_rows(layouts, mixed_hidden.shape[1])
    text_flat = (m.sample * lw + m.w - 1).to(device)  # row i - 1 of w predicts w[i]
    m_rows = misalignment_rows(
        student.logits(text_hidden[text_flat]), student.logits(mixed_hidden.flatten(0, 1)[m.flat.to(device)])
    )
    f_sums, f_counts = per_sample(f_rows, f.sample, n)
    m_sums, m_counts = per_sample(m_rows, m.sample, n)
    return BatchGap(f_sums, f_counts, m_sums, m_counts)
