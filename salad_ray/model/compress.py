"""CTC compression: an adapter's frames -> one LLM position per token it heard.

A departure from the paper (which feeds every adapter frame to the LLM), after the CTC compressor of
Speech-LLaMA (Wu et al., 2023, "On decoder-only architecture for speech-to-text and large language
model integration"). It needs an adapter whose frames already point at their tokens' embeddings,
which the CTC warm-up trains (:func:`salad_ray.losses.ctc_alignment`).

For the adapter frames h_1..h_T of a span and the LLM's input embeddings e(v), each frame scores
every token by s_t(v) = <h_t, e(v)> and the CTC blank by 0, the same scores the warm-up trains.

1. Greedy segmentation: l_t = argmax over {blank} ∪ V of those scores. Frames labelled blank are
   dropped, and each maximal run of consecutive frames with the same token label is one segment.
2. Each segment S becomes one position, the expected embedding under the frames' token posteriors
   restricted to their ``top_k`` best tokens:

       z_S = (1 / |S|) * sum_{t in S} sum_{v in top_k(t)} p_t(v) e(v),
       p_t(v) = softmax_{v in top_k(t)} s_t(v).

   z_S lies among the embeddings the LLM reads text with, and it is differentiable in the adapter
   (through p), so distillation keeps training the adapter after the warm-up. The segmentation
   itself is a discrete choice and passes no gradient.

A span whose frames are all blank becomes one position: the mean of z over all its frames.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def ctc_compress(spans: list[torch.Tensor], embeddings: torch.Tensor, top_k: int) -> list[torch.Tensor]:
    """Each span's (T_k, H) adapter frames -> its (S_k, H) segment embeddings, S_k >= 1 (module
    docstring). The scores of every frame of every span are one product with the table.

    ``embeddings`` (V, H) is the LLM's input-embedding table (not trained through here).
    """
    if not spans:
        return []
    frames = torch.cat(spans)
    table = embeddings.detach().to(frames.dtype)
    top, ids = (frames @ table.T).topk(min(top_k, table.shape[0]), dim=-1)  # (T, k) of (T, V)
    labels = _greedy(top[:, 0], ids[:, 0])
    expected = torch.einsum("tk,tkh->th", F.softmax(top, dim=-1), table[ids])  # (T, H)
    bounds = [0, *itertools.accumulate(len(f) for f in spans)]
    return [_segments(expected[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)]


def _greedy(best: torch.Tensor, best_ids: torch.Tensor) -> torch.Tensor:
    """Step 1's labels from each frame's best token score and id: the token where it beats the
    blank's score of 0, else blank (-1)."""
    return torch.where(best > 0, best_ids, -1)


@torch.no_grad()
def spelled_tokens(spans: list[torch.Tensor], embeddings: torch.Tensor) -> list[list[int]]:
    """The tokens each span's (T_k, H) adapter frames spell under step 1's greedy labels: one token
    per segment (blanks dropped, runs of one label merged), what the positions of ctc_compress stand
    for (an all-blank span spells nothing here, where ctc_compress still gives it one position); the
    read-out of the CTC warm-up (a word-recognition check of the adapter)."""
    if not spans:
        return []
    best, best_ids = (torch.cat(spans) @ embeddings.detach().to(spans[0].dtype).T).topk(1, dim=-1)
    labels = _greedy(best[:, 0], best_ids[:, 0]).tolist()
    bounds = [0, *itertools.accumulate(len(f) for f in spans)]
    return [
        [label for label, _ in itertools.groupby(labels[a:b]) if label >= 0]
        for a, b in itertools.pairwise(bounds)
    ]


def _segments(expected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One span's segment means of ``expected`` under its greedy ``labels`` (-1: blank)."""
    keep = labels >= 0
    if not keep.any():
        return expected.mean(0, keepdim=True)
    # a new segment starts at each kept frame whose label differs from the previous frame's
    starts = keep & torch.cat([labels.new_ones(1, dtype=torch.bool), labels[1:] != labels[:-1]])
    segment = torch.cumsum(starts.long(), 0) - 1  # (T,) segment index of each frame
    n = int(starts.sum())
    sums = expected.new_zeros(n, expected.shape[-1]).index_add(0, segment[keep], expected[keep])
    counts = torch.bincount(segment[keep], minlength=n).to(expected.dtype)
    return sums / counts[:, None]
