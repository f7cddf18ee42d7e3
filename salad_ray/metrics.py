"""Forgetting F and misalignment M (DESIGN.md), per token and per sample.

For one sample with pure text w and mixed context c (see :mod:`salad_ray.interleave`), s its first
speech frame's position in c, and T the text targets of c (the c positions j >= 1 holding a text
token w[i], predicted by the student's row j - 1 of c):

    F = sum_{i=1}^{|w|-1}    KL( Q(. | w_<i) || P(. | w_<i) )          student fed text vs the teacher
    M = sum_{(j, i) in T_s}  KL( P(. | w_<i) || P(. | c_<j) )          the student, text vs speech
    T_s = {(j, i) in T : j > s}                                        the text targets after speech

F runs over every position of w that has a prediction. M runs over the text targets that follow
speech, both its sum and its count |T_s|: before s the causal prefix c_<j is w_<i itself, so those
targets have KL exactly 0 and would only dilute M (a probe opening with a 10-30-word text span would
weigh less than one opening with speech). A sample without speech has T_s empty (M = 0 over 0
targets). The distillation KL reported with M (``d`` of :class:`salad_ray.objective.BatchGap`, per
probe and per cluster in :mod:`salad_ray.scoring`),

    D = sum_{(j, i) in T_s}  KL( Q(. | w_<i) || P(. | c_<j) ),

runs over the same T_s, so D and M are comparable; the training loss L_DIST (:mod:`salad_ray.losses`)
still runs over all of T (before s its terms are F's, which keep the LLM close to the teacher). All
are in nats at temperature 1 and use the KL of :mod:`salad_ray.losses` (the lumped-tail KL when the
teacher is top-k).

The adapter's word recognition is read out as the token error rate of the tokens its frames spell
(:func:`token_error`).

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
    """KL(P_text || P_mixed) per text target; both (N, V) at matching targets (M's: those of T_s) -> (N,)."""
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
    """F, M and the distillation KL D over a set of samples (D per token over M's targets)."""

    samples: int
    f_per_token: float
    m_per_token: float
    d_per_token: float
    f_per_sample: float
    m_per_sample: float
    d_per_sample: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def per_token(sums, counts) -> float:
    """The token-weighted mean of a set of samples: sum of their sums / sum of their counts (0 over
    no positions). The one reduction of held-out F and M over samples (training, evaluation, report)."""
    total = float(torch.as_tensor(counts, dtype=torch.float64).sum())
    return float(torch.as_tensor(sums, dtype=torch.float64).sum()) / max(total, 1.0)


def summarize(f_sums, f_counts, m_sums, m_counts, d_sums) -> GapSummary:
    """Per-token and per-sample F, M and D from per-sample sums and counts (1-D sequences of equal
    length); D runs over M's targets, so its counts are ``m_counts``."""
    f_sums, f_counts, m_sums, m_counts, d_sums = (
        torch.as_tensor(x, dtype=torch.float64) for x in (f_sums, f_counts, m_sums, m_counts, d_sums)
    )
    n = f_sums.numel()
    if n == 0:
        raise ValueError("no samples to summarise")
    return GapSummary(
        samples=n,
        f_per_token=per_token(f_sums, f_counts),
        m_per_token=per_token(m_sums, m_counts),
        d_per_token=per_token(d_sums, m_counts),
        f_per_sample=float(f_sums.mean()),
        m_per_sample=float(m_sums.mean()),
        d_per_sample=float(d_sums.mean()),
    )


def token_error(references: list[list[int]], hypotheses: list[list[int]]) -> float:
    """sum_k lev(ref_k, hyp_k) / sum_k |ref_k|: the token error rate of the spans' spelled tokens
    against the tokens they speak, lev the Levenshtein distance over token ids."""
    from rapidfuzz.distance import Levenshtein

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references against {len(hypotheses)} hypotheses")
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references hold no tokens")
    return sum(Levenshtein.distance(r, h) for r, h in zip(references, hypotheses, strict=True)) / total
