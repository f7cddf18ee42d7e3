import math

import pytest
import torch
import torch.nn.functional as F

from salad_ray.losses import SparseTargets, kl_full, kl_topk, nll, salad_loss


def logits_of(probs):
    return torch.tensor(probs, dtype=torch.float64).log()[None]


def topk_targets(teacher_logits, k):
    logprobs, ids = F.log_softmax(teacher_logits.float(), -1).topk(k, -1)
    return SparseTargets(ids, logprobs)


def test_full_kl_by_hand():
    q, p = logits_of([0.5, 0.25, 0.25]), logits_of([0.25, 0.5, 0.25])
    # 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.5) + 0.25 ln 1 = 0.25 ln 2
    assert kl_full(q, p).item() == pytest.approx(0.25 * math.log(2), abs=1e-6)
    assert kl_full(q, q).item() == pytest.approx(0.0, abs=1e-7)
    # forward KL(Q||P), not KL(P||Q): the two differ on an asymmetric pair
    q2, p2 = logits_of([0.9, 0.1]), logits_of([0.5, 0.5])
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl_full(q2, p2).item() == pytest.approx(forward, abs=1e-6)


def test_topk_kl_lumps_the_tail_by_hand():
    q, p = logits_of([0.5, 0.25, 0.25]), logits_of([0.25, 0.5, 0.25])
    # k = 1: classes {0} and the tail {1, 2}: Q = (0.5, 0.5), P = (0.25, 0.75)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_topk(topk_targets(q, 1), p.float()).item() == pytest.approx(expected, abs=1e-6)


def test_temperature_by_hand():
    t, s = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    tau = 2.0
    qt = torch.softmax(t / tau, -1)[0]  # softened teacher, student stays uniform
    expected = tau**2 * float((qt * (qt / 0.5).log()).sum())
    assert kl_full(t, s, tau).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_topk_equals_full_when_k_is_the_vocabulary(temperature):
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 50) * 3, torch.randn(6, 50, requires_grad=True)
    full = kl_full(teacher, student, temperature)
    sparse = kl_topk(topk_targets(teacher, 50), student, temperature)
    torch.testing.assert_close(sparse, full, atol=1e-5, rtol=1e-5)
    (g_full,) = torch.autograd.grad(full.sum(), student)
    (g_sparse,) = torch.autograd.grad(sparse.sum(), student)
    torch.testing.assert_close(g_sparse, g_full, atol=1e-5, rtol=1e-5)


def test_topk_is_a_lower_bound_that_grows_with_k():
    torch.manual_seed(1)
    teacher, student = torch.randn(32, 40) * 2, torch.randn(32, 40) * 2
    full = kl_full(teacher, student)
    previous = torch.zeros(32)
    for k in (1, 2, 5, 10, 20, 39, 40):
        kl = kl_topk(topk_targets(teacher, k), student)
        assert (kl >= -1e-6).all()
        assert (kl <= full + 1e-5).all()
        assert (kl >= previous - 1e-5).all()  # nested partitions: refining never lowers the KL
        previous = kl


def test_topk_gradients_are_finite_and_pull_toward_the_teacher():
    torch.manual_seed(2)
    teacher = torch.randn(4, 30) * 4
    student = torch.zeros(4, 30, requires_grad=True)
    opt = torch.optim.SGD([student], lr=1.0)
    targets = topk_targets(teacher, 5)
    first = kl_topk(targets, student).sum().item()
    for _ in range(50):
        opt.zero_grad()
        loss = kl_topk(targets, student).sum()
        loss.backward()
        assert torch.isfinite(student.grad).all()
        opt.step()
    assert kl_topk(targets, student).sum().item() < 0.05 * first


def test_topk_rejects_ids_outside_the_vocabulary():
    bad = SparseTargets(torch.tensor([[-1, 2]]), torch.tensor([[0.0, -1.0]]))
    with pytest.raises(ValueError, match="outside the student's vocabulary"):
        kl_topk(bad, torch.zeros(1, 5))


def test_salad_loss_is_invariant_to_how_rows_are_split():
    torch.manual_seed(3)
    teacher, student = torch.randn(10, 20), torch.randn(10, 20)
    ids = torch.randint(0, 20, (10,))
    targets = topk_targets(teacher, 4)
    whole = salad_loss(student, targets, ids, alpha=0.7, normalizer=10)
    halves = [
        salad_loss(
            student[s], SparseTargets(targets.ids[s], targets.logprobs[s]), ids[s], alpha=0.7, normalizer=10
        )
        for s in (slice(0, 3), slice(3, 10))
    ]
    assert whole.total.item() == pytest.approx(sum(h.total.item() for h in halves), abs=1e-6)
    assert whole.dist.item() == pytest.approx(kl_topk(targets, student).mean().item(), abs=1e-6)
    assert whole.nll.item() == pytest.approx(F.cross_entropy(student, ids).item(), abs=1e-6)
    assert whole.total.item() == pytest.approx(0.7 * whole.dist.item() + 0.3 * whole.nll.item(), abs=1e-6)


def test_alpha_extremes():
    student, ids = torch.randn(3, 8), torch.tensor([1, 2, 3])
    teacher = torch.randn(3, 8)
    only_kd = salad_loss(student, teacher, ids, alpha=1.0, normalizer=3)
    only_nll = salad_loss(student, teacher, ids, alpha=0.0, normalizer=3)
    assert only_kd.total.item() == pytest.approx(kl_full(teacher, student).mean().item(), abs=1e-6)
    assert only_kd.nll.item() == 0.0  # not computed at alpha = 1
    assert only_nll.total.item() == pytest.approx(nll(student, ids).mean().item(), abs=1e-6)


def test_losses_upcast_low_precision_inputs():
    teacher, student = torch.randn(2, 16).bfloat16(), torch.randn(2, 16).bfloat16()
    assert kl_full(teacher, student).dtype == torch.float32
    assert kl_topk(topk_targets(teacher.float(), 4), student).dtype == torch.float32
