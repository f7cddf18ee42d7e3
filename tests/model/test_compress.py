"""CTC compression: frames pointing at tokens become one position per token, in the embedding space."""

from __future__ import annotations

import torch

from salad_ray.model.compress import ctc_compress, spelled_tokens

V, H = 50, 64  # H >= V: the table's rows can be orthonormal, so a frame's other scores are 0


def table() -> torch.Tensor:
    """(V, H) embeddings with orthonormal rows."""
    q, _ = torch.linalg.qr(torch.randn(H, V, generator=torch.Generator().manual_seed(0)))
    return q.T


def frames_for(labels: list[int | None], e: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    """A frame per label: ``scale`` times the token's embedding, or zeros (every score 0: blank)."""
    return torch.stack([scale * e[v] if v is not None else torch.zeros(H) for v in labels])


def test_blanks_drop_repeats_merge_and_a_blank_separates_a_repeated_token():
    e = table()
    (out,) = ctc_compress([frames_for([3, 3, None, 7, 7, 7, None, None, 3, None, 3], e)], e, top_k=4)
    assert out.shape == (4, H)  # 3 | 7 | 3 | 3: the blank splits the last two
    for row, v in zip(out, [3, 7, 3, 3], strict=True):
        torch.testing.assert_close(row, e[v], atol=1e-4, rtol=0)


def test_a_position_is_the_expected_embedding_over_the_frame_s_top_tokens():
    e = table()
    frame = 2.0 * (e[1] + e[2])  # ties tokens 1 and 2; every other score is ~0
    (out,) = ctc_compress([frame[None]], e, top_k=2)
    torch.testing.assert_close(out[0], (e[1] + e[2]) / 2, atol=1e-4, rtol=0)


def test_an_all_blank_span_still_becomes_one_position():
    e = table()
    assert ctc_compress([frames_for([None, None, None], e)], e, top_k=4)[0].shape == (1, H)


def test_gradients_reach_the_frames_but_not_the_embeddings():
    e = table().requires_grad_()
    frames = frames_for([5, None, 9], e.detach(), scale=1.0).requires_grad_()
    ctc_compress([frames], e, top_k=4)[0].sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert e.grad is None


def test_spans_compressed_together_are_compressed_as_alone():
    """One product for every span's frames: a span's segments never run into the next span's (here
    the first span ends and the second starts on the same token)."""
    e = table()
    spans = [frames_for(labels, e) for labels in ([3, 3, 7], [7, 7, None, 2], [None])]
    together = ctc_compress(spans, e, top_k=4)
    assert [len(z) for z in together] == [2, 2, 1]
    for span, z in zip(spans, together, strict=True):
        torch.testing.assert_close(z, ctc_compress([span], e, top_k=4)[0])
    assert ctc_compress([], e, top_k=4) == []


def test_the_spelled_tokens_are_the_tokens_the_compressed_positions_stand_for():
    """Greedy CTC read-out: blanks dropped, runs merged, a blank between two runs of one token keeps
    both; each span on its own (no run crosses a span's end)."""
    e = table()
    spans = [
        frames_for([3, 3, None, 7, 7, None, None, 3, None, 3], e),
        frames_for([3, None], e),
        frames_for([None], e),
    ]
    assert spelled_tokens(spans, e) == [[3, 7, 3, 3], [3], []]
    compressed = ctc_compress(spans, e, top_k=4)
    assert [len(c) for c in compressed[:2]] == [4, 1]  # one position per spelled token
    assert spelled_tokens([], e) == []
