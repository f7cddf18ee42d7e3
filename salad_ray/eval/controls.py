"""Controls for speech evaluations: does the student use what was said?

The *shuffled-audio* control keeps every sample's text, spans and teacher targets and gives its
speech spans another sample's audio. A student that listens scores worse on it; one that guesses
from the text alone (or ignores its adapter) scores the same. The difference between the
real-audio and the shuffled-audio score is what the student takes from the speech.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from salad_ray.batch import Sample


def derange(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(n) with no fixed points (n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2, got n={n}")
    rng = np.random.default_rng(seed)
    # Sattolo's algorithm: a uniformly random n-cycle, which moves every element.
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(i))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def shuffled_audio(samples: list[Sample], seed: int) -> list[Sample]:
    """The shuffled-audio control: each sample's speech spans spoken by another sample's audio.

    Only the audio moves; ids, spans, teacher targets and source stay, and the sample id is tagged
    ``+shuffled``. Samples with speech are deranged among themselves (:func:`derange`), so none keeps
    its own audio; samples without speech are returned unchanged. A sample's speech span k takes its
    donor's span ``k mod n_donor`` (n_donor: the donor's number of speech spans), so a sample with
    more spans than its donor reuses the donor's spans cyclically and one with fewer uses the first
    ones. Comparing a score on ``samples`` with the same score on this control measures how much the
    student takes from the speech. Raises ValueError with fewer than two samples that have speech.
    """
    spoken = [i for i, s in enumerate(samples) if s.audio]
    if len(spoken) < 2:
        raise ValueError(f"shuffling audio needs at least 2 samples with speech, got {len(spoken)}")
    out = list(samples)
    for i, d in zip(spoken, derange(len(spoken), seed), strict=True):
        sample, donor = samples[i], samples[spoken[d]].audio
        audio = [donor[k % len(donor)] for k in range(len(sample.audio))]
        out[i] = replace(sample, sample_id=f"{sample.sample_id}+shuffled", audio=audio)
    return out
