"""Where the student's outputs meet the teacher's: the training objective and the gap of a batch.

Rows are gathered before the vocabulary projection (:meth:`SpeechLM.forward`), so only target rows
ever become (N, V) logits. The formulas themselves live in :mod:`salad_ray.losses` and
:mod:`salad_ray.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from salad_ray.batch import Batch, Sample, collate
from salad_ray.interleave import mixed_layout
from salad_ray.losses import LossParts, SparseTargets, ctc_alignment, kl_to_teacher, salad_loss
from salad_ray.metrics import GapSummary, forgetting_rows, misalignment_rows, per_sample, summarize
from salad_ray.model.student import Rows, SpeechLM


def count_targets(sample: Sample, frames) -> int:
    """Text targets of a sample's mixed context, without running the model (``frames``: samples -> frames)."""
    layout = mixed_layout(len(sample.ids), sample.spans, [frames(len(a)) for a in sample.audio])
    return len(layout.c_rows)


def teacher_at(batch: Batch, rows: Rows, device: torch.device) -> SparseTargets:
    if batch.teacher_ids is None or batch.teacher_logprobs is None:
        raise ValueError("this batch carries no teacher top-k; ask the teacher first")
    return SparseTargets(
        batch.teacher_ids[rows.sample, rows.w].to(device),
        batch.teacher_logprobs[rows.sample, rows.w].to(device),
    )


def distillation_loss(
    student: nn.Module, batch: Batch, *, alpha: float, temperature: float, normalizer: float | torch.Tensor
) -> tuple[LossParts, int]:
    """Eq. 4 on the mixed contexts of a batch; returns the parts and the number of target rows.

    ``student`` is a :class:`SpeechLM`, or one wrapped by DDP / FSDP.
    """
    logits, rows = student(batch, "mixed")
    target_ids = batch.w_ids[rows.sample, rows.w].to(logits.device)
    targets = teacher_at(batch, rows, logits.device)
    parts = salad_loss(
        logits, targets, target_ids, alpha=alpha, temperature=temperature, normalizer=normalizer
    )
    return parts, len(rows)


def speech_tokens(sample: Sample) -> list[list[int]]:
    """The tokens of w each speech span of a sample speaks."""
    return [sample.ids[s.start : s.end] for s in sample.spans if s.speech]


def count_speech_tokens(sample: Sample) -> int:
    """Targets of the alignment warm-up: the tokens spoken by a sample's speech spans."""
    return sum(len(t) for t in speech_tokens(sample))


def alignment_loss(
    model: nn.Module,
    student: SpeechLM,
    samples: list[Sample],
    *,
    negatives: int,
    generator: torch.Generator,
    normalizer: float | torch.Tensor,
    device: torch.device,
) -> tuple[LossParts, int]:
    """The warm-up objective: CTC of every speech span's tokens from its adapter frames
    (:func:`salad_ray.losses.ctc_alignment`), over the classes {blank} ∪ the batch's spoken tokens ∪
    ``negatives`` token ids drawn uniformly from the vocabulary (a sampled softmax: the frames
    learn to point at their token's embedding rather than at any other's). The LLM does not run.

    ``model`` is the student, or the student wrapped by DDP / FSDP; ``student`` the bare one.
    """
    spoken = [torch.tensor(t) for s in samples for t in speech_tokens(s)]
    if not spoken:
        # No speech in this share of the step: the adapter still runs, weighted by zero, so a DDP or
        # FSDP student's workers all join the step's gradient collectives.
        scores, _ = model(collate(samples).to(device), "speech", classes=torch.zeros(0, dtype=torch.long))
        zero = 0.0 * scores.sum()
        return LossParts(zero, zero, zero), 0
    vocab = student.vocab_size
    drawn = torch.randint(vocab, (negatives,), generator=generator)
    classes = torch.unique(torch.cat([*spoken, drawn]))  # sorted
    targets = [1 + torch.searchsorted(classes, t) for t in spoken]
    scores, _ = model(collate(samples).to(device), "speech", classes=classes)
    frame_lens = torch.tensor([student.frames(len(a)) for s in samples for a in s.audio], device=device)
    loss = ctc_alignment(scores, frame_lens, targets, normalizer=normalizer)
    return LossParts(loss, loss.new_zeros(()), loss.new_zeros(())), sum(len(t) for t in spoken)


@dataclass(frozen=True)
class BatchGap:
    """Per-sample sums and counts of F, M and D for a batch or a set of samples, (B,) each
    (:mod:`salad_ray.metrics`).

    M runs over the text targets that follow speech; ``d_sums`` is the distillation KL(Q || P_mixed)
    over those same targets (so its counts are ``m_counts``), comparable with M, and unlike the
    training loss, which also counts the targets before the first speech frame.
    """

    f_sums: torch.Tensor
    f_counts: torch.Tensor
    m_sums: torch.Tensor
    m_counts: torch.Tensor
    d_sums: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The five per-sample tensors in field order (``f_sums, f_counts, m_sums, m_counts, d_sums``)."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def summary(self) -> GapSummary:
        """Per-token and per-sample F, M and D over these samples."""
        return summarize(*self.tensors())


@torch.no_grad()
def batch_gap(student: nn.Module, batch: Batch) -> BatchGap:
    """F (student on w vs teacher), M (student on w vs student on c) and the distillation KL
    (teacher on w vs student on c) of every sample in a batch; M and the KL over the text targets
    that follow speech."""
    n = len(batch)
    text_logits, f = student(batch, "text")  # every predicted position of w, sample by sample
    f_rows = forgetting_rows(teacher_at(batch, f, text_logits.device), text_logits)
    mixed_logits, targets = student(batch, "mixed")
    # Before its first speech frame c is w, so P(.|c) = P(.|w) there: those targets are left out.
    post = targets.after_speech
    mixed_logits, m = mixed_logits[post.to(mixed_logits.device)], targets.select(post)
    # The text rows predicting the same tokens as the mixed targets are among F's rows: sample b's
    # row for w[i] sits at offset[b] + i - 1.
    offset = torch.cumsum(batch.w_lens - 1, 0) - (batch.w_lens - 1)
    m_rows = misalignment_rows(text_logits[(offset[m.sample] + m.w - 1).to(text_logits.device)], mixed_logits)
    d_rows = kl_to_teacher(teacher_at(batch, m, mixed_logits.device), mixed_logits)
    f_sums, f_counts = per_sample(f_rows, f.sample, n)
    m_sums, m_counts = per_sample(m_rows, m.sample, n)
    d_sums, _ = per_sample(d_rows, m.sample, n)
    return BatchGap(f_sums, f_counts, m_sums, m_counts, d_sums)


@torch.no_grad()
def samples_gap(
    student: nn.Module,
    samples: list[Sample],
    batch_size: int,
    device,
    batches: int | None = None,
    progress: str | None = None,
) -> BatchGap:
    """:func:`batch_gap` of every sample, ``batch_size`` per forward, concatenated in order: the one
    place held-out F, M and D are computed (training, ``salad_ray.measure``, evaluation).

    ``batches`` runs that many forwards, those past the samples on ``samples[0]`` alone, its rows
    dropped: ranks that must run the same number of forwards (FSDP's are collective). ``progress``
    names a progress bar over the forwards, for a person watching."""
    from tqdm import tqdm

    n_batches = -(-len(samples) // batch_size) if batches is None else batches
    was_training = student.training
    student.eval()
    parts = [torch.zeros(0, dtype=torch.float64)] * len(fields(BatchGap))
    for b in tqdm(range(n_batches), desc=progress, unit="batch", disable=progress is None):
        chunk = samples[b * batch_size : (b + 1) * batch_size]
        gap = batch_gap(student, collate(chunk or samples[:1]).to(device))
        real = len(chunk)
        parts = [torch.cat([p, t[:real]]) for p, t in zip(parts, gap.tensors(), strict=True)]
    student.train(was_training)
    return BatchGap(*parts)
