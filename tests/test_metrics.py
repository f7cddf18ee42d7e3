import math

import pytest
import torch

from salad_ray.losses import SparseTargets
from salad_ray.metrics import forgetting_rows, misalignment_rows, per_sample, per_token, summarize


def log(p):
    return torch.tensor(p, dtype=torch.float32).log()


def test_forgetting_and_misalignment_by_hand():
    teacher = log([[0.5, 0.5], [0.9, 0.1]])  # Q(.|w<i)
    student_text = log([[0.5, 0.5], [0.5, 0.5]])  # P(.|w<i)
    student_speech = log([[0.8, 0.2], [0.5, 0.5]])  # P(.|c<j)
    f = forgetting_rows(teacher, student_text)
    m = misalignment_rows(student_text, student_speech)
    kl_09 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    kl_08 = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    torch.testing.assert_close(f, torch.tensor([0.0, kl_09]), atol=1e-6, rtol=0)
    # M compares the student with itself: text (as Q) against speech (as P)
    torch.testing.assert_close(m, torch.tensor([kl_08, 0.0]), atol=1e-6, rtol=0)


def test_forgetting_from_sparse_teacher_matches_full_when_k_is_v():
    teacher = log([[0.7, 0.2, 0.1]])
    student = log([[0.2, 0.3, 0.5]])
    logprobs, ids = teacher.topk(3, -1)
    torch.testing.assert_close(
        forgetting_rows(SparseTargets(ids, logprobs), student), forgetting_rows(teacher, student)
    )


def test_per_sample_and_summary_by_hand():
    rows = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0])
    sample = torch.tensor([0, 0, 1, 1, 1])
    sums, counts = per_sample(rows, sample, 3)
    assert sums.tolist() == [3.0, 13.0, 0.0] and counts.tolist() == [2.0, 3.0, 0.0]
    summary = summarize(
        sums[:2], counts[:2], torch.tensor([2.0, 4.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0])
    )
    assert summary.f_per_token == pytest.approx(16 / 5)  # token-weighted
    assert summary.f_per_sample == pytest.approx(8.0)  # mean of sample sums
    assert summary.m_per_token == pytest.approx(3.0) and summary.m_per_sample == pytest.approx(3.0)
    assert summary.d_per_token == pytest.approx(2.0)  # over M's targets: (1 + 3) / (1 + 1)
    assert summary.d_per_sample == pytest.approx(2.0)
    with pytest.raises(ValueError):
        summarize([], [], [], [], [])


def test_per_token_weights_samples_by_their_positions_and_is_zero_over_none():
    assert per_token([6.0, 1.0], [3, 1]) == pytest.approx(7 / 4)
    assert per_token([0.0], [0]) == 0.0


def test_token_error_is_edits_over_reference_tokens():
    from salad_ray.metrics import token_error

    # one substitution and one deletion over 5 reference tokens; an inserted token in the other span
    assert token_error([[1, 2, 3], [4, 5]], [[1, 9], [4, 6, 5]]) == pytest.approx(3 / 5)
    assert token_error([[1, 2]], [[1, 2]]) == 0.0
    with pytest.raises(ValueError, match="2 references against 1 hypotheses"):
        token_error([[1], [2]], [[1]])
    with pytest.raises(ValueError, match="no tokens"):
        token_error([[]], [[1]])
