"""In-memory samples and collated batches, the currency between data, model, losses and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from salad_ray.interleave import TokenSpan


@dataclass
class Sample:
    """One mixed speech/text example (see :mod:`salad_ray.interleave`).

    Attributes:
        sample_id: stable id (content + voice + settings).
        ids: the pure text w.
        spans: the token spans of w; the speech ones have audio.
        audio: one 16 kHz float32 waveform per speech span, in order.
        teacher_ids, teacher_logprobs: (len(w), k) teacher top-k per position, row i predicting w[i];
            row 0 has no prediction (ids -1). None until the teacher has been asked.
        source: where it came from (natural, active, text, heldout...).
    """

    sample_id: str
    ids: list[int]
    spans: list[TokenSpan]
    audio: list[np.ndarray] = field(default_factory=list)
    teacher_ids: np.ndarray | None = None
    teacher_logprobs: np.ndarray | None = None
    source: str = "synthetic"

    def __post_init__(self) -> None:
        n_speech = sum(s.speech for s in self.spans)
        if n_speech != len(self.audio):
            raise ValueError(
                f"sample {self.sample_id}: {n_speech} speech spans but {len(self.audio)} audio arrays"
            )

    def text_only(self) -> Sample:
        """The same sample with every span as text: c = w."""
        spans = [TokenSpan(s.start, s.end, False) for s in self.spans]
        return replace(self, spans=spans, audio=[])


@dataclass
class Batch:
    """Samples collated for the model.

    Attributes:
        w_ids: (B, Lw) token ids, right-padded with 0.
        w_lens: (B,) true lengths.
        spans, audio: per sample, as in :class:`Sample`.
        teacher_ids, teacher_logprobs: (B, Lw, k), padded with -1 / 0; None without a teacher.
    """

    w_ids: torch.Tensor
    w_lens: torch.Tensor
    spans: list[list[TokenSpan]]
    audio: list[list[np.ndarray]]
    teacher_ids: torch.Tensor | None = None
    teacher_logprobs: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.w_ids.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            w_ids=self.w_ids.to(device),
            w_lens=self.w_lens.to(device),
            teacher_ids=move(self.teacher_ids),
            teacher_logprobs=move(self.teacher_logprobs),
        )


def collate(samples: list[Sample]) -> Batch:
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    lw = max(len(s.ids) for s in samples)
    w_ids = torch.zeros(len(samples), lw, dtype=torch.long)
    for b, s in enumerate(samples):
        w_ids[b, : len(s.ids)] = torch.tensor(s.ids)
    teacher_ids = teacher_logprobs = None
    if all(s.teacher_ids is not None for s in samples):
        k = samples[0].teacher_ids.shape[1]
        teacher_ids = torch.full((len(samples), lw, k), -1, dtype=torch.long)
        teacher_logprobs = torch.zeros(len(samples), lw, k)
        for b, s in enumerate(samples):
            if s.teacher_ids.shape != (len(s.ids), k):
                raise ValueError(
                    f"sample {s.sample_id}: teacher top-k {s.teacher_ids.shape} != ({len(s.ids)}, {k})"
                )
            teacher_ids[b, : len(s.ids)] = torch.from_numpy(np.asarray(s.teacher_ids, dtype=np.int64))
            teacher_logprobs[b, : len(s.ids)] = torch.from_numpy(
                np.asarray(s.teacher_logprobs, dtype=np.float32)
            )
    return Batch(
        w_ids=w_ids,
        w_lens=torch.tensor([len(s.ids) for s in samples]),
        spans=[s.spans for s in samples],
        audio=[s.audio for s in samples],
        teacher_ids=teacher_ids,
        teacher_logprobs=teacher_logprobs,
    )
