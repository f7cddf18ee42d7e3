"""Distillation losses: forward KL to the teacher, from full logits or from sparse top-k log-probs.

Notation: Q is the teacher (the original text LLM fed the pure text w), P the student. All KLs here
are *forward* KL(Q || P) = sum_v Q(v) (log Q(v) - log P(v)), in nats, computed in float32 whatever
the input dtype, one value per position (row). Nothing is averaged here: callers divide the summed
rows by a global count of target positions (see :func:`salad_loss`), so a loss does not depend on
how a batch is split across workers or micro-batches.

Temperature tau: both distributions are softened, Q_tau ∝ Q^(1/tau), P_tau = softmax(z / tau), and
the KL is multiplied by tau^2 so gradient magnitudes do not shrink with tau (Hinton et al., 2015).
SALAD uses tau = 1.

Sparse teacher (top-k): the teacher sends, per position, the k most likely tokens S and their
log-probabilities log Q(v), normalised over the full vocabulary (so they sum to 1 - r, r the tail
mass). The tail V \\ S is treated as *one lumped class*: the loss is the exact KL between the
(k + 1)-class coarse-grainings of Q and P,

    KL_k = sum_{v in S} Q(v) (log Q(v) - log P(v))  +  r (log r - log P(V \\ S)),

with r = max(0, 1 - sum_{v in S} Q(v)) and P(V \\ S) the student's mass outside S. KL_k <= KL (the
data-processing inequality), with equality when k = |V|, and it still pushes the student's tail to
the right total mass. With tau != 1 the coarse distribution is tempered class by class (the tail as
one class), which again equals full tempering when k = |V|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SparseTargets:
    """Teacher top-k per target row: ``ids`` (N, k) token ids, ``logprobs`` (N, k) natural-log probs."""

    ids: torch.Tensor
    logprobs: torch.Tensor

    def __post_init__(self) -> None:
        if self.ids.shape != self.logprobs.shape or self.ids.dim() != 2:
            raise ValueError(f"top-k ids {tuple(self.ids.shape)} and log-probs {tuple(self.logprobs.shape)}")


Targets = torch.Tensor | SparseTargets
"""Full teacher logits (N, V), or sparse top-k log-probs."""


def kl_full(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(Q_tau || P_tau) * tau^2 per row, from full logits; (N, V), (N, V) -> (N,)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2


def kl_topk(targets: SparseTargets, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Coarse-grained KL_k(Q_tau || P_tau) * tau^2 per row (module docstring); (N, V) -> (N,)."""
    ids = targets.ids.long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= student_logits.shape[-1]):
        raise ValueError("teacher top-k ids outside the student's vocabulary (is row 0 included?)")
    k, vocab = ids.shape[-1], student_logits.shape[-1]
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    s_top = s.gather(-1, ids)  # (N, k)
    q_top = targets.logprobs.float()  # (N, k), log Q at tau = 1
    if k == vocab:  # no tail class
        t_top = F.log_softmax(q_top / temperature, dim=-1)
        return (t_top.exp() * (t_top - s_top)).sum(-1) * temperature**2
    s_tail = s.scatter(-1, ids, float("-inf")).logsumexp(-1)  # (N,) log P(V \ S)
    r = (1.0 - q_top.exp().sum(-1)).clamp(min=0.0)  # (N,) tail mass
    # log of the tempered coarse teacher: classes S then the tail, each raised to 1/tau, renormalised
    coarse = F.log_softmax(torch.cat([q_top, r.log()[:, None]], dim=-1) / temperature, dim=-1)  # (N, k+1)
    t_top, t_tail = coarse[:, :k], coarse[:, k]
    kl = (t_top.exp() * (t_top - s_top)).sum(-1)
    q_tail = t_tail.exp()
    kl = kl + torch.xlogy(q_tail, q_tail) - q_tail * s_tail
    return kl * temperature**2


def kl_to_teacher(targets: Targets, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row forward KL from whichever form the teacher's targets take."""
    if isinstance(targets, SparseTargets):
        return kl_topk(targets, student_logits, temperature)
    return kl_full(targets, student_logits, temperature)


def nll(student_logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """-log P(target) per row (natural log, float32); (N, V), (N,) -> (N,)."""
    return F.cross_entropy(student_logits.float(), target_ids.long(), reduction="none")


@dataclass(frozen=True)
class LossParts:
    """The objective and its parts, each already divided by the global target count."""

    total: torch.Tensor
    dist: torch.Tensor
    nll: torch.Tensor


def salad_loss(
    student_logits: torch.Tensor,
    targets: Targets,
    target_ids: torch.Tensor,
    *,
    alpha: float,
    temperature: float = 1.0,
    normalizer: float | torch.Tensor,
) -> LossParts:
    """Eq. 4 of the paper: L = alpha * L_DIST + (1 - alpha) * L_NLL over text-target rows.

    ``student_logits`` (N, V) are the student's predictions at the N target rows of the mixed
    context c; ``targets`` the teacher's distributions for the same N tokens given the pure text w;
    ``target_ids`` (N,) the tokens themselves. ``normalizer`` is the number of target rows in the
    whole optimiser step (all workers, all micro-batches): per-row sums divided by it make the loss a
    per-token mean that is invariant to sharding and gradient accumulation. A row-sum is skipped when
    its weight is 0, so alpha = 1 costs no cross-entropy.
    """
    zero = student_logits.new_zeros((), dtype=torch.float32)
    dist = kl_to_teacher(targets, student_logits, temperature).sum() / normalizer if alpha > 0 else zero
    ce = nll(student_logits, target_ids).sum() / normalizer if alpha < 1 else zero
    return LossParts(alpha * dist + (1 - alpha) * ce, dist, ce)


def ctc_alignment(
    scores: torch.Tensor, frame_lens: torch.Tensor, targets: list[torch.Tensor], *, normalizer
) -> torch.Tensor:
    """CTC of each speech span's tokens from its adapter frames (the warm-up objective).

    ``scores`` (K, T, C) are frame-by-class scores of K spans over C classes, class 0 the blank;
    ``targets[k]`` the class indices (>= 1) of span k's tokens; ``frame_lens`` (K,) the real frames.
    The loss is sum_k -log P_CTC(targets[k] | frames of k) / ``normalizer`` (the step's global
    number of target tokens), where P_CTC sums over every monotonic alignment of the tokens to the
    frames with blanks and repeats collapsed (Graves et al., 2006).
    """
    log_probs = F.log_softmax(scores.float(), dim=-1).transpose(0, 1)  # (T, K, C)
    flat = torch.cat(targets).to(scores.device)
    target_lens = torch.tensor([len(t) for t in targets], device=scores.device)
    per_span = F.ctc_loss(
        log_probs, flat, frame_lens, target_lens, blank=0, reduction="none", zero_infinity=True
    )
    return per_span.sum() / normalizer
