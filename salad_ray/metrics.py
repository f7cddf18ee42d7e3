"""Forgetting F and misalignment M (DESIGN.md), per token and per sample.

For one sample with pure text w and mixed context c (see :mod:`salad_ray.interleave`):

    F = sum_{i=1}^{|w|-1}   KL( Q(. | w_<i) || P(. | w_<i) )          student fed text vs the teacher
    M = sum_{(j, i) in T}   KL( P(. | w_<i) || P(. | c_<j) )           the student, text vs speech

T is the set of text targets of c: the c positions j >= 1 holding a text token w[i]; ``P(. | c_<j)``
is the student's output at row j - 1 of c. F runs over every position of w that has a prediction,
M over the text targets (the only positions where c and w are comparable). Both are in nats at
temperature 1 and use the KL of :mod:`salad_ray.losses` (the lumped-tail KL when the teacher is top-k).

Per sample we keep the sum and the number of positions; over a set of samples, *per token* is the
token-weighted mean (sum of sums / sum of counts) and *per sample* is the mean of the sample sums.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from salad_ray.losses import Targets, kl_full, kl_to_teacher


def forgetting_rows(teacher: Targets, student_text_logits: torch.Tensor) -> torch.Tensor:
    """KL(Q || P_text) per row; rows are positions of w, (N, V) -> (N,)."""
    return kl_to_teacher(teacher, student_text_logits)


def misalignment_rows(student_text_logits: torch.Tensor, student_mixed_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_text || P_mixed) per text target; both (N, V) at matching targets -> (N,)."""
    return kl_full(student_text_logits, student_mixed_logits)


def per_sample(
    rows: torch.Tensor, sample_of_row: torch.Tensor, n_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum rows by sample: (N,) values and (N,) sample indices -> (n_samples,) sums and counts."""
    idx = sample_of_row.long().to(rows.device)
    sums = torch.zeros(n_samples, dtype=torch.float64, device=rows.device).index_add_(0, idx, rows.double())
    counts = torch.bincount(idx, minlength=n_samples).to(torch.float64)
    return sums.cpu(), counts.cpu()


@dataclass(frozen=True)
class GapSummary:
    """F and M over a set of samples."""

    samples: int
    f_per_token: float
    m_per_token: float
    f_per_sample: float
    m_per_sample: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(f_sums, f_counts, m_sums, m_counts) -> GapSummary:
    """Per-token and per-sample F and M from per-sample sums and counts (1-D sequences of equal length)."""
    f_sums, f_counts, m_sums, m_counts = (
        torch.as_tensor(x, dtype=torch.float64) for x in (f_sums, f_counts, m_sums, m_counts)
    )
    n = f_sums.numel()
    if n == 0:
        raise ValueError("no samples to summarise")
    return GapSummary(
        samples=n,
        f_per_token=float(f_sums.sum() / f_counts.sum().clamp(min=1)),
        m_per_token=float(m_sums.sum() / m_counts.sum().clamp(min=1)),
        f_per_sample=float(f_sums.mean()),
        m_per_sample=float(m_sums.mean()),
    )
