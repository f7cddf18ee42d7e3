import json

import numpy as np

from salad_ray.report import read_metrics, write_report
from salad_ray.selection import Candidate, plan_round


def student(speech, text, m):
    return {
        "kind": "student",
        "accuracy": {"speech": speech, "text": text},
        "heldout": {
            "f": 0.01,
            "m": m,
            "targets": 10,
            "domains": {"law": {"f": 0.01, "m": 0.2, "targets": 4}},
        },
    }


RESULTS = {
    "tasks": {"a": 10, "b": 10},
    "chance": {"a": 0.25, "b": 0.5},
    "shots": 0,
    "voice": "en-us",
    "systems": {
        "original LLM": {"kind": "original", "accuracy": {"text": {"a": 0.8, "b": 0.6}}},
        "cascade": {"kind": "cascade", "accuracy": {"cascade": {"a": 0.7, "b": 0.6}}},
        "stage I": student({"a": 0.4, "b": 0.3}, {"a": 0.8, "b": 0.6}, 0.5),
        "stage II active": student({"a": 0.5, "b": 0.4}, {"a": 0.76, "b": 0.6}, 0.3),
    },
}


def test_report_from_a_run_directory(tmp_path):
    metrics = [
        {"stage": "stage1", "step": 2, "loss": 1.0, "loss_dist": 1.0, "loss_nll": 0.0},
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
            "loss": 0.7,
            "loss_dist": 0.7,
            "loss_nll": 0.0,
            "heldout_f": 0.02,
            "heldout_m": 0.3,
        },
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 3 and [r["loss"] for r in records if r["step"] == 4] == [
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
    )
    (tmp_path / "rounds" / "active" / "1").mkdir(parents=True)
    (tmp_path / "rounds" / "active" / "1" / "plan.json").write_text(json.dumps(plan.to_dict()))
    notes = {
        "gap": {
            "stage I": {"heldout_f": 0.02, "heldout_m": 0.4},
            "stage II active": {"heldout_f": 0.02, "heldout_m": 0.3},
        },
        "rounds": {"active": {"1": {"seconds": 5.2, "texts": 5}}},
        "pipelines": {"heldout": "heldout: 4 inputs -> 4 written"},
    }
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(RESULTS))
    path = write_report(tmp_path, notes, stage1_steps=4)
    text = path.read_text()
    assert "| stage II active | 0.02 | 0.3 |" in text
    assert "| 2 | 0.9 | 0.5 | dropped | 0 | 0 |" in text  # the high-CER cluster is dropped
    assert "Active round 1" in text and "5 s synthesized" in text and "heldout: 4 inputs" in text
    # Table 3: accuracy / gap (points) per task and on average, gap against the original LLM's text
    assert "| original LLM | text | 80.0 | 60.0 | 70.0 |" in text
    assert "| cascade | ASR transcript | 70.0 / +10.0 | 60.0 / +0.0 | 65.0 / +5.0 |" in text
    assert "| stage II active | speech | 50.0 / +30.0 | 40.0 / +20.0 | 45.0 / +25.0 |" in text
    assert "| stage II active | 76.0 / +4.0 | 60.0 / +0.0 | 68.0 / +2.0 |" in text  # text-side forgetting
    assert "| law | 0.0100 / 0.2000 |" in text  # held-out F / M per domain
    for png in (
        "heldout_gap.png",
        "losses.png",
        "m_per_cluster.png",
        "selection_share.png",
        "accuracy_vs_gap.png",
    ):
        assert (tmp_path / "report" / png).stat().st_size > 5000
