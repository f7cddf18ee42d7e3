"""Vocabulary logits from last hidden states, exactly as the causal LM's own forward makes them.

The student projects only the rows it needs (:meth:`SpeechLM.logits`) and the transformers teacher
scores whole sequences; both go through :func:`output_logits`, so an untrained student fed text
predicts what the teacher predicts (F = 0 at the start). For a last hidden state h (after the
decoder's final norm) a Hugging Face causal LM computes z = W_out h, then whatever its family's
config declares:

    logit_scale = a              (Cohere, Cohere 2):                  z <- a · z
    logits_scaling = a           (Granite family, MiniCPM3):          z <- z / a
                                 (HyperCLOVA X):                      z <- a · z
    lm_head_multiplier = a       (Falcon-H1):                         z <- a · z
    final_logit_softcapping = s  (Gemma 2 / 3 / 3n / 4, nanochat):   z <- s · tanh(z / s)

Llama, Qwen, Mistral, SmolLM and most others declare none of these (z = W_out h). vLLM applies the
same maps in its model implementations, so the vLLM teacher agrees as well. A family that maps
hidden states to logits some other way is caught by :func:`check_logits`, which compares
:func:`output_logits` with the model's own forward on a few tokens (:class:`SpeechLM` runs it
whenever it is built) instead of letting F start above 0 unnoticed.
"""

from __future__ import annotations

import torch
from torch import nn

# Families whose ``logits_scaling`` multiplies the logits; every other user of the name divides.
_MULTIPLYING_LOGITS_SCALING = frozenset({"hyperclovax"})


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def output_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(..., H) last hidden states -> (..., V) logits of a transformers causal LM (module docstring)."""
    config = _text_config(model)
    z = model.get_output_embeddings()(hidden)
    if (a := getattr(config, "logit_scale", None)) is not None:
        z = z * a
    if (a := getattr(config, "logits_scaling", None)) is not None:
        z = z * a if getattr(config, "model_type", None) in _MULTIPLYING_LOGITS_SCALING else z / a
    if (a := getattr(config, "lm_head_multiplier", None)) is not None:
        z = z * a
    if (s := getattr(config, "final_logit_softcapping", None)) is not None:
        z = torch.tanh(z / s) * s
    return z


@torch.no_grad()
def check_logits(model: nn.Module, tokens: int = 8, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Raise NotImplementedError unless :func:`output_logits` of the decoder's last hidden states
    equals the model's own forward logits on ``tokens`` tokens (in eval mode, no dropout)."""
    training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids = (torch.arange(1, tokens + 1, device=device) % _text_config(model).vocab_size)[None]
        own = model(input_ids=ids).logits.float()
        ours = output_logits(model, model.get_decoder()(input_ids=ids).last_hidden_state).float()
    finally:
        model.train(training)
    if ours.shape != own.shape or not torch.allclose(ours, own, rtol=rtol, atol=atol):
        gap = float((ours - own).abs().max()) if ours.shape == own.shape else float("inf")
        raise NotImplementedError(
            f"{type(model).__name__}: its forward maps hidden states to logits in a way "
            f"salad_ray.model.logits does not reproduce (max |difference| {gap:.3g}); "
            "teach output_logits this family"
        )
