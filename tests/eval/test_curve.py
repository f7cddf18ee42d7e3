"""What reaching the M target would take: the fit through stage I's M and the arm's pace."""

import math

import pytest

from salad_ray.eval.curve import budget_section, m_budgets


def _record(stage: str, step: int, m: float, time: float) -> dict:
    return {
        "stage": stage,
        "step": step,
        "heldout_m": m,
        "time": time,
        "samples": 4 * step,
        "samples_per_s": 2.0,
    }


def test_an_exponential_fall_gives_its_rate_and_the_steps_to_the_target():
    rate = -0.01  # M(s) = M_I exp(rate s) exactly: the fit recovers the rate
    metrics = [_record("stage1", 10, 2.0, 100.0)] + [
        _record("stage2-active", s, 2.0 * math.exp(rate * s), 200.0 + 5.0 * s) for s in (8, 16, 24)
    ]
    (budget,) = m_budgets(metrics, target=0.7)
    assert budget.arm == "active" and budget.steps == 24
    assert budget.rate == pytest.approx(rate)
    assert budget.ratio == pytest.approx(math.exp(rate * 24))
    assert budget.steps_needed == 36  # the fit crosses 0.7 at step 35.7
    # wall-clock seconds from stage I's last measurement to the arm's last, per stage-II step
    assert budget.seconds_per_step == pytest.approx((200.0 + 5.0 * 24 - 100.0) / 24)
    text = "\n".join(budget_section([budget]))
    assert "| active | 24 | 0.787 | -9.5 % | 9.2 | 36 (12 more, about 2 more minutes) |" in text
    assert "An extrapolation from this run's own points, not a measurement." in text


def test_a_rising_m_gives_no_estimate_and_a_reached_target_says_so():
    metrics = [
        _record("stage1", 10, 1.0, 100.0),
        _record("stage2-uniform", 8, 1.1, 150.0),
        _record("stage2-active", 8, 0.6, 150.0),
    ]
    active, uniform = m_budgets(metrics, target=0.7)
    assert uniform.steps_needed is None
    text = "\n".join(budget_section([active, uniform]))
    assert "| active | 8 | 0.600 |" in text and text.count("reached") == 1
    assert "M did not fall on the fit: no estimate" in text


def test_a_fit_past_the_target_is_not_called_reached_and_a_zero_m_is_left_out():
    metrics = [
        _record("stage1", 10, 1.0, 100.0),
        _record("stage2-active", 5, 0.0, 120.0),  # ln 0: no rate; left out of the fit
        _record("stage2-active", 10, 0.5, 150.0),
        _record("stage2-active", 20, 0.75, 200.0),
    ]
    (budget,) = m_budgets(metrics, target=0.7)
    assert budget.rate == pytest.approx((10 * math.log(0.5) + 20 * math.log(0.75)) / 500)
    assert budget.steps_needed == 15 and budget.ratio == pytest.approx(0.75)
    text = "\n".join(budget_section([budget]))
    assert "| 15: the fit is past the target, the last measurement is not |" in text
    assert "reached" not in text


def test_no_estimate_without_a_stage_one_measurement():
    assert m_budgets([_record("stage2-active", 8, 0.6, 150.0)], target=0.7) == []
    assert budget_section([]) == []
