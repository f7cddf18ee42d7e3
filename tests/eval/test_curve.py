"""What reaching the M target, and a gap shown smaller after stage II, would take: the fits through
stage I's M and accuracy, and the arm's pace."""

import math

import pytest

from salad_ray.eval.curve import budget_section, gap_budget_section, gap_budgets, m_budgets


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


def _student(correct: list[int], stage: str | None, at: int | None, role: str = "final") -> dict:
    """An evaluated student of one task, ``cloze``, as eval/results.json holds it."""
    return {
        "kind": "student",
        "role": role,
        "stage": stage,
        "step": at,
        "correct": {"speech": {"cloze": correct}},
    }


def _results(stage1: list[int], arms: dict[str, list[int]], step: int = 30) -> dict:
    systems = {"stage I": _student(stage1, "stage1", 10)}
    systems |= {f"stage II {arm}": _student(c, f"stage2-{arm}", step) for arm, c in arms.items()}
    return {"tasks": {"cloze": {}}, "systems": systems}


def test_a_rising_accuracy_gives_the_steps_at_which_its_interval_would_clear_zero():
    """Over 200 items, the active student answers 10 more right than stage I (+5 points) and none
    fewer; uniform answers the same ones right: its change is 0 and it gets no estimate."""
    stage1 = [0] * 100 + [1] * 100
    active = [1] * 10 + [0] * 90 + [1] * 100
    metrics = [_record("stage1", 10, 1.0, 100.0), _record("stage2-active", 30, 0.6, 250.0)]
    active_budget, uniform_budget = gap_budgets(
        _results(stage1, {"active": active, "uniform": stage1}), metrics
    )
    assert active_budget.arm == "active" and active_budget.steps == 30
    assert active_budget.change.estimate == pytest.approx(0.05)
    assert 0 < active_budget.change.low < 0.05 < active_budget.change.high  # 10 of 200 flipped, all one way
    m = active_budget.margin
    assert m == pytest.approx(0.05 - active_budget.change.low)
    assert active_budget.students == 1 and active_budget.rate == pytest.approx(0.05 / 30)
    assert active_budget.steps_needed(0.05 / 30) == math.floor(m * 30 / 0.05) + 1  # the first step past m
    assert active_budget.seconds_per_step == pytest.approx(5.0)  # (250 - 100) s over 30 steps
    assert uniform_budget.change.estimate == 0 and uniform_budget.steps_needed(0.0) is None
    text = "\n".join(gap_budget_section([active_budget, uniform_budget]))
    assert "| active | 30 | +5.0 [" in text and "| shown | shown |" in text  # its interval is above 0
    assert "| uniform | 30 | +0.0 [+0.0, +0.0] | 1 | +0.00 | 0.0 | none: accuracy does not rise |" in text


def test_a_change_whose_interval_holds_zero_gets_a_budget_in_steps_and_minutes():
    stage1 = [0] * 50 + [1] * 50
    active = [1] * 9 + [0] * 41 + [0] * 6 + [1] * 44  # 9 items gained, 6 lost: +3 points
    metrics = [_record("stage1", 10, 1.0, 100.0), _record("stage2-active", 30, 0.6, 250.0)]
    (budget,) = gap_budgets(_results(stage1, {"active": active}), metrics)
    assert budget.change.estimate == pytest.approx(0.03) and budget.change.low <= 0
    needed = budget.steps_needed(0.03 / 30)
    assert needed > 30
    text = "\n".join(gap_budget_section([budget]))
    assert f"| {needed}, about {needed * 5 / 60:.0f} minutes |" in text
    optimistic = budget.steps_needed(budget.change.high / 30)  # the upper end: fewer steps than trained
    assert optimistic <= 30 and f"| {optimistic}: within this run's 30 |" in text
    assert "An extrapolation, not a measurement." in text
    assert gap_budget_section([]) == []


def test_the_rate_is_fitted_to_every_evaluated_student_of_the_arm():
    """Round students (eval.round_students) join the fit: +4 points at step 10, +2 at 20, +3 at 30 give
    r = (10·4 + 20·2 + 30·3) / (100 + 400 + 900) points a step, not the last student's 3 / 30."""
    stage1 = [0] * 50 + [1] * 50

    def gained(n: int) -> list[int]:
        return [1] * n + [0] * (50 - n) + [1] * 50

    results = _results(stage1, {"active": gained(3)})
    results["systems"] |= {
        f"active round {r}": _student(gained(n), "stage2-active", 10 * r, "round")
        for r, n in ((1, 4), (2, 2))
    }
    # another arm's student at a step of its own, and the untrained one: neither is fitted
    results["systems"]["uniform round 1"] = _student(gained(40), "stage2-uniform", 15, "round")
    results["systems"]["untrained student"] = _student([0] * 100, None, None, "untrained")
    metrics = [_record("stage1", 10, 1.0, 100.0), _record("stage2-active", 30, 0.6, 250.0)]
    (budget,) = gap_budgets(results, metrics)  # uniform's round student alone makes no arm
    assert budget.students == 3 and budget.steps == 30
    assert budget.change.estimate == pytest.approx(0.03)
    assert budget.rate == pytest.approx((10 * 0.04 + 20 * 0.02 + 30 * 0.03) / 1400)
    assert budget.steps_needed(budget.rate) == math.floor(budget.margin / budget.rate) + 1
    assert "| active | 30 | +3.0 [" in "\n".join(gap_budget_section([budget]))


def test_a_shown_change_reads_shown_even_where_the_fitted_rate_falls():
    """Over 200 items: -5 points at 10 steps, -5 at 20, then +3 at 30 with none lost: the line through
    them falls, but the last interval is above 0, so the gap is shown smaller."""
    stage1 = [0] * 100 + [1] * 100
    lost = [0] * 100 + [0] * 10 + [1] * 90
    results = _results(stage1, {"active": [1] * 6 + [0] * 94 + [1] * 100})
    results["systems"] |= {
        f"active round {r}": _student(lost, "stage2-active", 10 * r, "round") for r in (1, 2)
    }
    metrics = [_record("stage1", 10, 1.0, 100.0), _record("stage2-active", 30, 0.6, 250.0)]
    (budget,) = gap_budgets(results, metrics)
    assert budget.rate == pytest.approx((10 * -0.05 + 20 * -0.05 + 30 * 0.03) / 1400) and budget.rate < 0
    assert budget.change.low > 0
    assert "| shown | shown |" in "\n".join(gap_budget_section([budget]))
