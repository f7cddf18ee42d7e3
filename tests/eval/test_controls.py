"""The shuffled-audio control of the evaluation: derangements and prompts heard with another's context."""

from __future__ import annotations

import numpy as np
import pytest

from salad_ray.eval.controls import derange
from salad_ray.eval.items import Item
from salad_ray.eval.likelihood import build_prompt, context_pieces
from salad_ray.eval.suite import shuffled_prompts


@pytest.mark.parametrize("n", [2, 3, 7, 150])
def test_derange_moves_every_item_and_is_seeded(n):
    for seed in range(20):
        perm = derange(n, seed)
        assert sorted(perm.tolist()) == list(range(n))  # a permutation
        assert not np.any(perm == np.arange(n))  # no fixed point: no item keeps its own audio
    assert np.array_equal(derange(n, 5), derange(n, 5))


def _prompt(k: int, shot: Item | None, words: int):
    item = Item(f"i{k}", "t", " ".join(f"w{k}_{j}" for j in range(words)), (f"a{k}", f"b{k}"), 0)
    prompt = build_prompt(item, [shot] if shot else [], span_words=4)
    prompt.audio = [np.full(3, 10 * k + n, dtype=np.float32) for n in range(len(prompt.spoken_texts()))]
    return prompt


def test_shuffled_prompts_swap_the_items_own_spoken_context_only():
    shot = Item("s", "t", "one two three", ("four", "five"), 0)
    prompts = [_prompt(k, shot if k % 2 else None, words=3 + 2 * k) for k in range(5)]
    shuffled = shuffled_prompts({"t": prompts}, seed=0)["t"]
    donors = derange(5, 0)
    for k, (real, control) in enumerate(zip(prompts, shuffled, strict=True)):
        donor = prompts[donors[k]]
        own, theirs = context_pieces(real), context_pieces(donor)
        assert control.item == real.item  # options and answer stay the item's
        assert control.pieces[: len(real.pieces) - own] == real.pieces[: len(real.pieces) - own]  # the shot
        assert control.pieces[-theirs:] == donor.pieces[-theirs:]
        assert len(control.audio) == len(control.spoken_texts())
        heard = control.audio[-theirs:]
        assert all(a is b for a, b in zip(heard, donor.audio[-theirs:], strict=True))
        assert not any(a is b for a in heard for b in real.audio)  # none of its own context's audio
