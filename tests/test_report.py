import json

import numpy as np
import pandas as pd

from salad_ray import timeline
from salad_ray.accounting import PipelineReport
from salad_ray.config import load_config
from salad_ray.eval.stats import accuracy_interval
from salad_ray.eval.tables import nats
from salad_ray.phases import Phase
from salad_ray.report import read_metrics, summary, write_report
from salad_ray.rundir import ACTIVE, RunDir
from salad_ray.runstate import Notes, RunState
from salad_ray.selection import Candidate, plan_round


def vector(hits: int, n: int = 10) -> list[int]:
    return [1] * hits + [0] * (n - hits)


DOMAINS = ["law", "medicine"] * 6  # medicine: the held-out-only domain


def heldout(m_per_sample: list[float], d_per_sample: list[float] | None = None) -> dict:
    """Held-out F, M (and D where given) with per-sample sums (10 targets each), as the suite writes
    them; results from before D was kept have no ``d_sum``."""
    n = len(m_per_sample)
    per_sample = {
        "ids": [f"s{k}" for k in range(n)],
        "domains": DOMAINS[:n],
        "f_sum": [0.1] * n,
        "f_targets": [10.0] * n,
        "m_sum": [10 * m for m in m_per_sample],
        "m_targets": [10.0] * n,
        **({"d_sum": [10 * d for d in d_per_sample]} if d_per_sample is not None else {}),
    }
    domains = {
        d: {
            "f": 0.01,
            "m": float(np.mean([m for m, dd in zip(m_per_sample, DOMAINS, strict=False) if dd == d])),
            "targets": 10.0 * DOMAINS[:n].count(d),
        }
        for d in sorted(set(DOMAINS[:n]))
    }
    return {
        "f": 0.01,
        "m": float(np.mean(m_per_sample)),
        **({"d": float(np.mean(d_per_sample))} if d_per_sample is not None else {}),
        "targets": 10.0 * n,
        "domains": domains,
        "per_sample": per_sample,
    }


def student(speech, text, m, shuffled=None, d=None, **extra):
    """A student's results: ``speech`` / ``text`` hits out of 10 per task, per-sample held-out M (and D)."""
    out = {
        "kind": "student",
        "role": "final",
        "accuracy": {
            "speech": {t: h / 10 for t, h in speech.items()},
            **({"text": {t: h / 10 for t, h in text.items()}} if text else {}),
        },
        "correct": {
            "speech": {t: vector(h) for t, h in speech.items()},
            **({"text": {t: vector(h) for t, h in text.items()}} if text else {}),
        },
        "heldout": heldout(m, d),
        **extra,
    }
    if shuffled is not None:
        hits, shuffled_m = shuffled
        out["shuffled"] = {
            "accuracy": {"speech": {t: h / 10 for t, h in hits.items()}},
            "correct": {"speech": {t: vector(h) for t, h in hits.items()}},
            "heldout": heldout(shuffled_m),
        }
    return out


NOISE = [0.02, -0.03, 0.01, -0.01, 0.03, -0.02, 0.0, 0.02, -0.01, 0.01, -0.02, 0.0]
UNIFORM_M = [0.3 + 0.1 * (k % 3) for k in range(12)]


STAGE1_D = [0.4] * 12


def results(active_m: list[float], d: bool = True) -> dict:
    """``d``: with held-out D per sample (stage I 0.4, active the same up to noise, uniform 0.1 lower)."""
    return {
        "tasks": {"a": 10, "b": 10},
        "items": {t: [f"{t}{k}" for k in range(10)] for t in "ab"},
        "chance": {"a": 0.25, "b": 0.5},
        "shots": 0,
        "voice": "en-us",
        "seed": 0,
        "heldout_only": ["medicine"],
        "systems": {
            "original LLM": {
                "kind": "original",
                "accuracy": {"text": {"a": 0.8, "b": 0.6}},
                "correct": {"text": {"a": vector(8), "b": vector(6)}},
            },
            "cascade": {
                "kind": "cascade",
                "accuracy": {"cascade": {"a": 0.7, "b": 0.6}},
                "correct": {"cascade": {"a": vector(7), "b": vector(6)}},
            },
            "untrained student": student(
                {"a": 2, "b": 5}, None, [1.5] * 12, role="untrained", stage=None, step=0
            ),
            "stage I": student(
                {"a": 4, "b": 3},
                {"a": 8, "b": 6},
                [0.5] * 12,
                ({"a": 3, "b": 3}, [0.6] * 12),
                d=STAGE1_D if d else None,
                stage="stage1",
                step=4,
            ),
            "stage II uniform": student(
                {"a": 5, "b": 4},
                {"a": 8, "b": 6},
                UNIFORM_M,
                ({"a": 2, "b": 3}, [0.5] * 12),
                d=[0.3] * 12 if d else None,
                stage="stage2-uniform",
                step=2,
            ),
            "stage II active": student(
                {"a": 5, "b": 4},
                {"a": 7, "b": 6},
                active_m,
                ({"a": 2, "b": 4}, [0.5] * 12),
                d=[x + n for x, n in zip(STAGE1_D, NOISE, strict=True)] if d else None,
                stage="stage2-active",
                step=2,
            ),
            "active round 1": student(
                {"a": 4, "b": 4}, None, [0.45] * 12, role="round", stage="stage2-active", step=1
            ),
        },
    }


RESULTS = results([u + n for u, n in zip(UNIFORM_M, NOISE, strict=True)])  # active ~ uniform: noise


def test_report_from_a_run_directory(tmp_path):
    metrics = [
        {"stage": "warmup", "step": 2, "loss": 5.0, "heldout_f": 0.0, "heldout_m": 1.2},  # shared by the arms
        {
            "stage": "stage1",
            "step": 2,
            "loss": 1.0,
            "loss_dist": 1.0,
            "loss_nll": 0.0,
            "samples": 8,
            "samples_per_s": 0.1,
        },
        {
            "stage": "stage1",
            "step": 4,
            "loss": 0.9,
            "loss_dist": 0.9,
            "loss_nll": 0.0,
            "heldout_f": 0.01,
            "heldout_m": 0.5,
        },
        {
            "stage": "stage1",
            "step": 4,
            "loss": 0.8,
            "loss_dist": 0.8,
            "loss_nll": 0.0,
            "heldout_f": 0.02,
            "heldout_m": 0.4,
        },
        {
            "stage": "stage2-active",
            "step": 2,
            "seconds": 20.0,
            "data_wait_s": 0.5,
            "loss": 0.7,
            "loss_dist": 0.7,
            "loss_nll": 0.0,
            "heldout_f": 0.02,
            "heldout_m": 0.3,
        },
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 4 and [r["loss"] for r in records if r["step"] == 4] == [
        0.8
    ]  # a redone step keeps its last record
    candidates = [Candidate(f"t{c}{i}", c, 1.0) for c in range(3) for i in range(10)]
    plan = plan_round(
        1,
        np.array([0.1, 0.5, 0.9]),
        np.array([0.05, 0.05, 0.5]),
        np.full(3, 1 / 3),
        candidates,
        gamma=5.0,
        max_cer=0.2,
        budget_seconds=5.0,
        seed=0,
        kl=np.array([0.2, 0.6, 1.1]),
    )
    config, run = load_config("smoke"), RunDir(tmp_path)  # stage I of 4 steps, 2 stage-II rounds
    run.plan(ACTIVE, 1).parent.mkdir(parents=True)
    run.plan(ACTIVE, 1).write_text(json.dumps(plan.to_dict()))
    notes = Notes(
        gap={
            "stage I": {"heldout_f": -6.931e-06, "heldout_m": 0.4},  # F: the rounding noise of a step
            "stage II active": {"heldout_f": 0.02, "heldout_m": 0.3, "heldout_d": 0.35},
        },
        rounds={"active": {1: {"seconds": 5.2, "texts": 5}}},
        pipelines={
            "heldout": PipelineReport(
                "heldout",
                inputs=6,
                written=4,
                quarantined={"too short": 1},
                skipped={"duplicate": 1},
                teacher_retries=2,
                tts_busy_s=30.0,
                tts_idle_s=10.0,
            )
        },
    )
    run.eval.mkdir()
    run.results.write_text(json.dumps(RESULTS))
    for n, name in enumerate(["heldout", "pool", "warmup", "stage1", "active/round-1/train", "eval"]):
        phase = Phase(name, lambda: None, lane=name.split("/")[0], training=name in ("warmup", "stage1"))
        timeline.record(run.timeline, phase, 10.0 * n, 10.0 * n + 15)
    # round 1's probe scores: cluster 1's two probes disagree, so its M interval is wide; cluster 2
    # has the highest M but is dropped, so the overlap is counted against cluster 1
    probes = pd.DataFrame(
        {"cluster": [0, 0, 1, 1, 2, 2], "m_sum": [0.1, 0.3, 0.2, 0.8, 0.9, 0.9], "m_count": [1] * 6}
    )
    run.probe_scores(1).parent.mkdir(parents=True, exist_ok=True)
    probes.to_parquet(run.probe_scores(1))
    path = write_report(config, run, notes)
    text = path.read_text()
    assert "![timeline](timeline.png)" in text
    assert "Stage II's trainer waited for data 2.5 % of its training time" in text
    assert "The TTS actors sat idle 25.0 % of their time in the pool" in text and "heldout 25 %" in text
    assert "| after | forgetting F | misalignment M | distillation KL D |" in text
    assert "| stage I | 0.0000 | 0.4000 | nan |" in text
    assert "| stage II active | 0.0200 | 0.3000 | 0.3500 |" in text
    # M, its interval over the probes, KL; the high-CER cluster is dropped
    assert "| 2 | 0.9000 | [0.900, 0.900] | 1.1000 | 0.5000 | dropped | 0.0000 | 0.0000 |" in text
    assert "| 1 | 0.5000 | [0.200, 0.800] |" in text
    assert "[0.100, 0.300]" in text
    assert "Kept clusters whose M interval overlaps the highest-M kept cluster's: 1 of 1." in text
    assert "signal misalignment" in text
    assert "Active round 1" in text and "5 s synthesized" in text
    assert "| heldout | 6 | 4 | 1 (too short 1) | 1 (duplicate 1) | 2 |" in text

    # Table 3: accuracy [95 % CI] / gap (points) per task and on average, gap against the original's text
    def ci(*hits: int) -> str:
        interval = accuracy_interval([vector(h) for h in hits])
        return f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"

    assert f"| original LLM | text | 80.0 {ci(8)} | 60.0 {ci(6)} | 70.0 {ci(8, 6)} |" in text
    assert (
        f"| cascade | ASR transcript | 70.0 {ci(7)} / +10.0 | 60.0 {ci(6)} / +0.0 | 65.0 {ci(7, 6)} / +5.0 |"
        in text
    )
    assert (
        f"| stage II active | speech | 50.0 {ci(5)} / +30.0 | 40.0 {ci(4)} / +20.0 | 45.0 {ci(5, 4)} / +25.0 |"
        in text
    )
    assert f"| untrained student | speech | 20.0 {ci(2)} / +60.0 |" in text  # the control row
    assert "| active round 1 | speech |" not in text  # round students: the learning curve only
    assert "percentile bootstrap intervals (2000 resamples" in text
    assert (
        f"| stage II active | 70.0 {ci(7)} / +10.0 | 60.0 {ci(6)} / +0.0 | 65.0 {ci(7, 6)} / +5.0 |" in text
    )
    # held-out F / M per domain, the held-out-only domain on its own row
    assert "| law | 0.0100 / 1.5000 | 0.0100 / 0.5000 |" in text  # untrained, stage I
    assert "| held-out domain (unseen) | 0.0100 / 1.5000 [1.5000, 1.5000] | 0.0100 / 0.5000 [" in text
    assert "held-out domain (unseen): medicine (data.heldout_only)" in text
    # the gap after stage II against after stage I: paired over the same items (A_I - A_arm)
    assert "### The gap after stage II against after stage I" in text
    assert "Gap after stage II active minus gap after stage I: -10.0 [" in text
    # what stage II moved: M and D against stage I's, paired over the held-out samples
    assert "### What stage II moved: M against D" in text
    assert "| stage I | 0.0100 | 0.5000 [0.5000, 0.5000] | 0.4000 [0.4000, 0.4000] | - | - |" in text
    assert (
        "D after stage II uniform minus D after stage I: -0.1000 [-0.1000, -0.1000] nats per target over "
        "12 held-out samples; lower after stage II." in text
    )
    assert "D after stage II active minus D after stage I: +0.0000 [" in text
    assert "the interval includes 0: this run does not show D move" in text
    # active against uniform: paired, and claimed only when the interval excludes 0
    assert "**No measurable difference** between active and uniform on held-out M" in text
    assert "Active beats uniform" not in text
    assert "Spoken accuracy, active - uniform: +0.0 [+0.0, +0.0] points" in text
    # shuffled audio: accuracy and M with another item's / sample's speech, paired against real audio
    assert "### Controls: shuffled audio" in text
    assert f"| stage I | 35.0 {ci(4, 3)} | 30.0 {ci(3, 3)} | +5.0 [" in text
    assert "| 0.5000 [0.5000, 0.5000] | 0.6000 [0.6000, 0.6000] | +0.1000 [+0.1000, +0.1000] |" in text
    # learning curve: the evaluated students at their steps (untrained 0, stage I 4, round 1 at 4 + 1)
    assert (
        "### Learning curve" in text
        and "| active round 1 | 5 |" in text
        and "| untrained student | 0 | 0.0 |" in text
    )
    # the budget the M target would take on this run's fit: 0.4 after stage I, 0.3 at stage-II step 2
    assert "### What reaching held-out M 0.7 × stage I's would take" in text
    assert "| active | 2 | 0.750 | -76.3 % | - | 3 (1 more) |" in text

    better = results([m - 0.1 for m in UNIFORM_M], d=False)  # active lower on every sample; no D kept
    run.results.write_text(json.dumps(better))
    notes.gap = {label: gap.model_copy(update={"heldout_d": None}) for label, gap in notes.gap.items()}
    text = write_report(config, run, notes).read_text()
    assert "M against D" not in text  # results from before D was kept: no section, no empty column
    assert "| after | forgetting F | misalignment M |\n" in text
    assert "**Active beats uniform** on held-out M, active - uniform = -0.1000 [-0.1000, -0.1000]" in text
    assert "No measurable difference** between active and uniform on held-out M" not in text
    for png in (
        "heldout_gap.png",
        "losses.png",
        "m_per_cluster.png",
        "selection_share.png",
        "accuracy_vs_gap.png",
        "learning_curve.png",
        "timeline.png",
    ):
        assert (tmp_path / "report" / png).stat().st_size > 5000


def test_the_closing_lines_give_each_milestones_gap_with_rounding_noise_as_zero(tmp_path):
    state = RunState(tmp_path / "state.json")
    warmup = {"heldout_f": -6.931e-06, "heldout_m": 1.17324, "heldout_d": 0.87061}  # F: rounding noise
    state.finish("stage1", gap={"warm-up": warmup, "stage I": {"heldout_f": 0.0422, "heldout_m": 0.9217}})
    lines = summary(load_config("smoke"), RunDir(tmp_path), state).splitlines()
    assert "  after warm-up  held-out F = 0.0000  M = 1.1732  D = 0.8706" in lines
    assert "  after stage I  held-out F = 0.0422  M = 0.9217" in lines  # a run from before D: no D


def test_nats_prints_rounding_noise_as_zero_and_a_sign_only_when_asked():
    assert nats(-6.931e-06) == "0.0000" and nats(-6.931e-06, signed=True) == "+0.0000"
    assert nats(0.12346) == "0.1235" and nats(-0.0421, signed=True) == "-0.0421"
    assert nats(float("nan")) == "nan"  # a run from before a measure was kept
