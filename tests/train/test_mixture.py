"""The training stream over sources made of segments (pure Python: no Ray, no shards)."""

from __future__ import annotations

from collections import Counter

import pytest

from salad_ray.train.mixture import SampleRef, Segment, mixture_stream, segmented_stream

MIX = {"natural": 1 / 3, "active": 1 / 3, "text": 1 / 3}  # the stage2_mix default
PER_ROUND = 60  # stream positions per round (steps per round x samples per step)
SEED = 7


def refs(source: str, name: str, n: int) -> list[SampleRef]:
    return [SampleRef(source, f"{name}.parquet", row, f"{name}-{row}") for row in range(n)]


FIXED = {"natural": [Segment(refs("natural", "natural", 9))], "text": [Segment(refs("text", "text", 5))]}
ROUNDS = [refs("active", f"active-{r}", n) for r, n in ((1, 12), (2, 8), (3, 11))]


def stream_after(rounds: int, total_rounds: int = 3) -> list[SampleRef]:
    """The whole stage's stream as the trainer computes it in round ``rounds``: the stores of rounds
    1 .. rounds, round r's readable from its first position."""
    active = [Segment(ROUNDS[r], r * PER_ROUND) for r in range(rounds)]
    return segmented_stream({**FIXED, "active": active}, MIX, total_rounds * PER_ROUND, SEED)


def active_reads(stream: list[SampleRef], r: int) -> list[str]:
    """The active samples read by round r's positions, in order."""
    window = stream[(r - 1) * PER_ROUND : r * PER_ROUND]
    return [ref.sample_id for ref in window if ref.source == "active"]


def test_a_growing_pool_keeps_the_stream_prefix_and_trains_every_new_sample():
    streams = {r: stream_after(r) for r in (1, 2, 3)}
    for r in (1, 2, 3):  # enough steps: each round has at least as many active positions as samples
        assert len(active_reads(streams[3], r)) >= len(ROUNDS[r - 1])
    for r in (1, 2):  # adding round r + 1's store leaves every position up to the end of round r as it was
        assert streams[r + 1][: r * PER_ROUND] == streams[r][: r * PER_ROUND]
    final = streams[3]
    for r in (1, 2, 3):
        own = {ref.sample_id for ref in ROUNDS[r - 1]}
        reads = active_reads(final, r)
        # the positions of round r read round r's selection first, every sample of it once
        assert sorted(reads[: len(own)]) == sorted(own)
        earlier = [ref.sample_id for ref in final[: (r - 1) * PER_ROUND]]
        assert not own & set(earlier)  # and none of it before round r


def test_the_mixture_draws_its_sources_whatever_they_hold():
    """Which source position p reads does not depend on the segments: the weights alone decide."""
    sources = [[ref.source for ref in stream_after(r)] for r in (1, 2, 3)]
    assert sources[0] == sources[1] == sources[2]
    shares = Counter(sources[0])
    assert {s: shares[s] / len(sources[0]) for s in MIX} == pytest.approx(MIX, abs=0.1)


def test_a_source_reads_every_sample_once_before_any_again():
    """One segment from the start (stage I): epochs, each a permutation of the source's samples."""
    pool = refs("natural", "natural", 7)
    stream = mixture_stream({"natural": pool}, {"natural": 1.0}, 7 * 5, SEED)
    epochs = [stream[e * 7 : (e + 1) * 7] for e in range(5)]
    assert all(sorted(epoch, key=lambda ref: ref.row) == pool for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled every epoch
    assert stream == segmented_stream({"natural": [Segment(pool)]}, {"natural": 1.0}, 35, SEED)


def test_replay_epochs_cover_every_readable_segment():
    """Round 1 (3 samples, 20 positions) reads its store, then replays it; round 2 reads its own 4
    samples, the rest of the replay epoch it interrupted, then epochs over both stores."""
    small = [refs("active", "a1", 3), refs("active", "a2", 4)]
    active = [Segment(small[0], 0), Segment(small[1], 20)]
    stream = segmented_stream({"active": active}, {"active": 1.0}, 20 + 4 + 1 + 7 * 3, SEED)
    ids = [ref.sample_id for ref in stream]
    first = {ref.sample_id for ref in small[0]}
    assert all(set(ids[e : e + 3]) == first for e in range(0, 18, 3))  # 6 epochs of round 1's store
    assert set(ids[18:20]) < first and set(ids[18:20] + ids[24:25]) == first  # the interrupted 7th
    assert set(ids[20:24]) == {ref.sample_id for ref in small[1]}
    union = first | set(ids[20:24])
    for e in range(3):
        epoch = ids[25 + 7 * e : 25 + 7 * (e + 1)]
        assert sorted(epoch) == sorted(union)


def test_a_source_with_nothing_readable_where_it_is_drawn_is_an_error():
    with pytest.raises(ValueError, match="'active' at position 0"):
        segmented_stream({"active": [Segment(refs("active", "a", 3), 10)]}, {"active": 1.0}, 5, SEED)
    with pytest.raises(ValueError, match="no committed samples"):
        mixture_stream({"natural": []}, {"natural": 1.0}, 5, SEED)
