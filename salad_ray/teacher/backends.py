"""Teacher backends: compute the answer of :mod:`salad_ray.teacher.protocol` for a batch.

``transformers``: one padded forward per batch (right padding, causal attention, so padding never
changes real positions); full logits are available too (:meth:`TransformersBackend.logits`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from salad_ray.teacher.protocol import Limits, TopK, validate_request


class TransformersBackend:
    """The teacher LLM in transformers, on one device."""

    name = "transformers"

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_k: int = 1000,
    ):
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        config = self.model.config
        self.limits = Limits(config.vocab_size, config.max_position_embeddings, min(max_k, config.vocab_size))

    @torch.no_grad()
    def logits(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Full next-token logits (L, V) float32 per sequence: row i predicts token i + 1."""
        lengths = [len(s) for s in sequences]
        ids = torch.zeros(len(sequences), max(lengths), dtype=torch.long)
        for b, seq in enumerate(sequences):
            ids[b, : len(seq)] = torch.tensor(seq)
        mask = (torch.arange(ids.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
        return [out[b, :n] for b, n in enumerate(lengths)]

    def topk(self, sequences: list[list[int]], k: int) -> list[TopK]:
        """The protocol's answer: row i = top-k of log_softmax(logits[i - 1]), row 0 empty."""
        validate_request(sequences, k, self.limits)
        answers = []
        for logits in self.logits(sequences):
            logprobs, ids = F.log_softmax(logits[:-1], dim=-1).topk(k, dim=-1)  # (L - 1, k), sorted
            answers.append(TopK.from_rows(ids.cpu().numpy(), logprobs.cpu().numpy()))
        return answers

    def close(self) -> None:
        del self.model
