"""M (and the distillation KL beside it) over the text targets that follow speech, on a real tiny student.

M's targets are the text targets of c after the sample's first speech frame (salad_ray.metrics): the
ones before it have the same causal prefix in c and w, so their KL is 0 by construction and counting
them would only make M depend on the probes' layout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from salad_ray.batch import Sample, collate
from salad_ray.interleave import TokenSpan
from salad_ray.metrics import misalignment_rows
from salad_ray.model.student import SpeechLM
from salad_ray.objective import batch_gap, count_targets, samples_gap
from salad_ray.scoring import per_cluster

TOP_K = 8


@pytest.fixture(scope="module")
def student(smoke_config):
    torch.manual_seed(0)
    return SpeechLM.from_config(smoke_config.models).eval()


def sample(student, name: str, layout: list[tuple[int, bool]], seed: int) -> Sample:
    """A sample of random tokens laid out as (tokens, spoken) spans, random audio for the spoken
    ones, and the untrained LLM's own top-k on w as the teacher."""
    rng = np.random.default_rng(seed)
    ids, spans, audio = [], [], []
    for n, spoken in layout:
        spans.append(TokenSpan(len(ids), len(ids) + n, spoken))
        ids += rng.integers(10, 2000, n).tolist()
        if spoken:
            audio.append((0.1 * rng.standard_normal(4000 + 800 * n)).astype(np.float32))
    with torch.no_grad():
        logits = student._causal_lm()(input_ids=torch.tensor([ids])).logits[0]
    logprobs, top = torch.log_softmax(logits[:-1].float(), -1).topk(TOP_K, -1)
    teacher_ids = np.concatenate([np.full((1, TOP_K), -1), top.numpy()])
    teacher_logprobs = np.concatenate([np.zeros((1, TOP_K)), logprobs.numpy()])
    return Sample(name, ids, spans, audio, teacher_ids, teacher_logprobs.astype(np.float32))


@pytest.fixture(scope="module")
def probes(student):
    """A text-first probe (12 text tokens before its speech), a speech-first one, an interleaved one."""
    return [
        sample(student, "text-first", [(12, False), (4, True), (6, False)], 0),
        sample(student, "speech-first", [(5, True), (7, False)], 1),
        sample(student, "interleaved", [(9, False), (3, True), (5, False), (4, True), (4, False)], 2),
    ]


def test_m_targets_exclude_the_text_before_the_first_speech_frame(student, probes):
    batch = collate(probes)
    gap = batch_gap(student, batch)
    # M's targets: every text token after the first speech span (6; 7; 5 + 4), never the 12 / 9
    # text tokens before it, which are targets of the training loss.
    assert gap.m_counts.tolist() == [6.0, 7.0, 9.0]
    assert gap.f_counts.tolist() == [len(s.ids) - 1 for s in probes]
    with torch.no_grad():
        mixed, rows = student(batch, "mixed")
        text, _ = student(batch, "text")
    assert len(rows) == 17 + 7 + 17  # every text token of c after its first element
    offset = torch.cumsum(batch.w_lens - 1, 0) - (batch.w_lens - 1)
    kl = misalignment_rows(text[offset[rows.sample] + rows.w - 1], mixed)
    # the targets left out are exactly the zero-KL ones (c = w before the first speech frame) ...
    assert kl[~rows.after_speech].abs().max() < 1e-5
    assert (kl[rows.after_speech] > 1e-3).all()
    # ... and M is the mean over the rest: same sums as over every target, fewer counts
    for b in range(len(probes)):
        mine = rows.after_speech & (rows.sample == b)
        assert float(gap.m_sums[b]) == pytest.approx(float(kl[mine].sum()), rel=1e-5)
        assert float(gap.m_sums[b]) == pytest.approx(float(kl[rows.sample == b].sum()), rel=1e-4)
    # a text-only layout has no target after speech: nothing to measure, M = 0 over 0 targets
    text_gap = batch_gap(student, collate([s.text_only() for s in probes]))
    assert text_gap.m_counts.tolist() == [0.0, 0.0, 0.0] and text_gap.m_sums.abs().max() == 0
    assert text_gap.d_sums.abs().max() == 0


def scores(student, cluster: int, samples: list[Sample]) -> pd.DataFrame:
    """The scorer's columns (salad_ray.scoring.ScoreStage) for one probe set."""
    gap = batch_gap(student, collate(samples))
    return pd.DataFrame(
        {
            "sample_id": [s.sample_id for s in samples],
            "cluster": cluster,
            "cer": 0.0,
            "m_sum": gap.m_sums.tolist(),
            "m_count": gap.m_counts.tolist(),
            "d_sum": gap.d_sums.tolist(),
            "all_targets": [count_targets(s, student.frames) for s in samples],  # every text target of c
        }
    )


def test_two_probe_sets_that_differ_only_in_layout_get_the_same_m(student, probes):
    """Probe set 0 holds the spoken probes; set 1 the same probes and their text-only layouts (c = w,
    every target before any speech, KL 0 by construction). Counting every text target of c, set 1's
    M would be diluted by those zero-KL targets; over the targets after speech both sets agree, and
    so does the distillation KL beside it."""
    table = pd.concat(
        [scores(student, 0, probes), scores(student, 1, probes + [s.text_only() for s in probes])],
        ignore_index=True,
    )
    m, cer, kl = per_cluster(table, 2)
    assert m[0] > 0 and kl[0] > 0 and (cer == 0).all()
    assert m[1] == pytest.approx(m[0], rel=1e-5)
    assert kl[1] == pytest.approx(kl[0], rel=1e-5)
    # the old definition (every text target of c) tells the two sets apart
    old = table.groupby("cluster")["m_sum"].sum() / table.groupby("cluster")["all_targets"].sum()
    assert old[1] < 0.7 * old[0]
    # and a text-first probe alone is not diluted by its 11 leading zero-KL targets either
    one = scores(student, 0, probes[:1])
    assert per_cluster(one, 1)[0][0] == pytest.approx(one["m_sum"][0] / 6, rel=1e-6)


def test_held_out_gap_in_chunks_and_with_extra_forwards_is_the_one_batch_gap(student, probes):
    """samples_gap (training's, measure's and evaluation's held-out F and M) in forwards of 2, and
    with two forwards more than the samples need (a rank with fewer samples than another), gives
    each sample the sums and counts of one forward over all of them."""
    whole = batch_gap(student, collate(probes))
    for gap in (
        samples_gap(student, probes, 2, "cpu"),
        samples_gap(student, probes, 2, "cpu", batches=4),
    ):
        for name in ("f_sums", "f_counts", "m_sums", "m_counts", "d_sums"):
            torch.testing.assert_close(getattr(gap, name), getattr(whole, name), rtol=1e-4, atol=1e-5)
    assert len(samples_gap(student, probes[:1], 2, "cpu", batches=3).f_sums) == 1
