"""The warmup-stable-decay schedule (salad_ray.train.schedule.WSD), alone and in torch's LambdaLR."""

from __future__ import annotations

import pickle

import pytest
import torch

from salad_ray.train.schedule import WSD


def test_warmup_then_flat_then_linear_decay_to_zero():
    wsd = WSD(total_steps=10, warmup_steps=4, decay_fraction=0.2)  # decay over steps 8 and 9
    assert [wsd(s) for s in range(10)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1.0, 0.5])
    assert wsd(10) == 0.0  # the end of the horizon


def test_no_warmup_and_no_decay_are_flat():
    assert [WSD(5, 0, 0.0)(s) for s in range(5)] == [1.0] * 5


def test_in_lambda_lr_each_group_follows_its_own_base_rate_and_survives_a_state_dict():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WSD(6, 2, 0.5))
    seen = []
    for _ in range(6):
        seen.append(schedule.get_last_lr())
        optimizer.step()
        schedule.step()
    assert [a for a, _ in seen] == pytest.approx([0.5, 1.0, 1.0, 1.0, 2 / 3, 1 / 3])
    assert [b for _, b in seen] == pytest.approx([0.05, 0.1, 0.1, 0.1, 2 / 30, 1 / 30])
    restored = torch.optim.lr_scheduler.LambdaLR(optimizer, pickle.loads(pickle.dumps(WSD(6, 2, 0.5))))
    restored.load_state_dict(schedule.state_dict())
    assert restored.get_last_lr() == schedule.get_last_lr()
