"""The evaluation of a run on the smoke preset: what results.json keeps for intervals and controls,
and the speech cache (each spoken piece synthesized and transcribed once, across evaluations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salad_ray.assets import resolve
from salad_ray.eval import suite
from salad_ray.eval.suite import CASCADE, ORIGINAL, UNTRAINED, StudentSpec, evaluate
from salad_ray.measure import attach_teacher, heldout_samples
from salad_ray.model.student import SpeechLM
from salad_ray.rundir import EVAL_CACHE
from salad_ray.teacher.backends import TransformersBackend


@pytest.fixture(scope="module")
def saved_student(smoke_config, tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("student") / "s"
    SpeechLM.from_config(smoke_config.models).save(path)
    return path


@pytest.fixture(scope="module")
def held(smoke_config):
    student = SpeechLM.from_config(smoke_config.models)
    samples = heldout_samples(smoke_config, student.tokenizer)
    teacher = TransformersBackend(resolve(smoke_config.models.llm, "causal-lm"))
    attach_teacher(samples, teacher, smoke_config.distill.top_k, 4)
    teacher.close()
    return [(s, "law" if n % 2 else "science") for n, s in enumerate(samples)]


def test_results_keep_per_item_correctness_per_sample_gap_and_controls(
    smoke_config, saved_student, held, tmp_path, monkeypatch
):
    monkeypatch.setattr(suite, "heldout_samples", lambda _: held)
    calls = []
    from salad_ray.asr import WhisperASR

    real = WhisperASR.transcribe
    monkeypatch.setattr(
        WhisperASR, "transcribe", lambda self, waves: calls.append(len(waves)) or real(self, waves)
    )
    students = {
        "stage I": StudentSpec(saved_student, stage="stage1", step=4),
        "active round 1": StudentSpec(saved_student, role="round", stage="stage2-active", step=2),
    }
    result = evaluate(smoke_config, students, tmp_path / "held", cache_dir=tmp_path / "cache")
    assert list(result["systems"]) == [ORIGINAL, CASCADE, UNTRAINED, "stage I", "active round 1"]
    ((task, n),) = result["tasks"].items()
    assert len(result["items"][task]) == n
    student = SpeechLM.load(saved_student)
    prompts = suite.build_prompts(smoke_config, student.tokenizer, student.bos_id)[task]
    assert sum(calls) == len({t for p in prompts for t in p.spoken_texts()})  # each piece heard once
    for system in result["systems"].values():
        for mode, by_task in system["correct"].items():
            hits = by_task[task]
            assert len(hits) == n and set(hits) <= {0, 1}
            assert system["accuracy"][mode][task] == pytest.approx(np.mean(hits))
    first = result["systems"]["stage I"]
    assert set(first["correct"]) == {"speech", "text"} and first["step"] == 4
    assert set(result["systems"]["active round 1"]["correct"]) == {"speech"}  # no controls for rounds
    assert "shuffled" not in result["systems"]["active round 1"]
    untrained = result["systems"][UNTRAINED]
    assert untrained["role"] == "untrained" and untrained["step"] == 0
    assert untrained["heldout"]["f"] == pytest.approx(0, abs=1e-4)  # its LLM is the original
    # per-sample held-out sums add up to the totals
    rows = first["heldout"]["per_sample"]
    assert rows["ids"] == [s.sample_id for s, _ in held] and rows["domains"] == [d for _, d in held]
    assert first["heldout"]["m"] == pytest.approx(sum(rows["m_sum"]) / sum(rows["m_targets"]))
    assert first["heldout"]["d"] == pytest.approx(sum(rows["d_sum"]) / sum(rows["m_targets"]))  # M's targets
    assert first["heldout"]["d"] > 0 and rows["d_sum"] != rows["m_sum"]  # against the teacher, not itself
    # shuffled audio: the same samples (ids, targets), other audio, so another M; F is untouched
    control = first["shuffled"]
    shuffled_rows = control["heldout"]["per_sample"]
    assert shuffled_rows["ids"] == rows["ids"] and shuffled_rows["m_targets"] == rows["m_targets"]
    assert control["heldout"]["f"] == pytest.approx(first["heldout"]["f"])
    assert shuffled_rows["m_sum"] != rows["m_sum"]
    assert len(control["correct"]["speech"][task]) == n

    calls.clear()
    again = evaluate(smoke_config, {}, None, cache_dir=tmp_path / "cache")
    assert calls == []  # a second evaluation reads the cached transcripts
    assert again["systems"][CASCADE]["correct"] == result["systems"][CASCADE]["correct"]


def test_baselines_scored_ahead_leave_the_results_as_one_evaluation_writes_them(
    smoke_config, saved_student, held, tmp_path, monkeypatch
):
    """A run scores the original LLM, the cascade and the untrained student beside stage I
    (run_baselines, the eval/baselines phase); the evaluation that follows takes them as scored and
    writes the same results.json as one evaluation of everything."""
    import json

    monkeypatch.setattr(suite, "heldout_samples", lambda _: held)
    students = {"stage I": StudentSpec(saved_student, stage="stage1", step=4)}
    whole = json.loads(
        suite.run_eval(smoke_config, students, tmp_path / "held", tmp_path / "whole").read_text()
    )
    ahead = suite.run_baselines(smoke_config, tmp_path / "held", tmp_path / "split")
    assert list(json.loads(ahead.read_text())) == [ORIGINAL, CASCADE, UNTRAINED]
    split = json.loads(
        suite.run_eval(smoke_config, students, tmp_path / "held", tmp_path / "split").read_text()
    )
    assert whole.pop("wall_seconds") > 0 and split.pop("wall_seconds") > 0
    assert split == whole


def test_speech_prepared_ahead_is_all_the_evaluation_needs(smoke_config, tmp_path, monkeypatch):
    """prepare_speech (a run's eval/speech phase, beside training) speaks and transcribes every piece
    the evaluation will hear: the evaluation that follows runs no TTS and no ASR."""
    import salad_ray.tts
    from salad_ray.asr import WhisperASR

    calls = []
    real = WhisperASR.transcribe
    monkeypatch.setattr(
        WhisperASR, "transcribe", lambda self, waves: calls.append(len(waves)) or real(self, waves)
    )
    suite.prepare_speech(smoke_config, tmp_path)
    student = SpeechLM.from_config(smoke_config.models)
    prompts = suite.build_prompts(smoke_config, student.tokenizer, student.bos_id)
    assert sum(calls) == len({t for ps in prompts.values() for p in ps for t in p.spoken_texts()})

    calls.clear()

    def no_tts(*args, **kwargs):
        raise AssertionError("the evaluation synthesized speech the prepared cache should hold")

    monkeypatch.setattr(salad_ray.tts, "build_tts", no_tts)
    result = evaluate(smoke_config, {}, None, cache_dir=tmp_path / EVAL_CACHE)
    assert calls == [] and result["systems"][CASCADE]["accuracy"]["cascade"]
