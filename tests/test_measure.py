import json

from salad_ray.measure import main


def test_measure_smoke_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "gap.json"
    assert main(["--preset", "smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["heldout_samples"] == 4 and result["heldout_speech_seconds"] > 0
    assert result["m_per_token"] > 0  # speech changes an untrained student's predictions
    assert abs(result["f_per_token"]) < 1e-3  # an untrained student's LLM is the teacher
    # With the student on text equal to the teacher, D is M seen through the teacher's top k with the
    # tail lumped: a coarse-graining of the same two distributions, so never larger.
    assert 0 < result["d_per_token"] <= result["m_per_token"] + 1e-3  # F's own tolerance
    out = capsys.readouterr().out
    assert "misalignment  M" in out and "distillation  D" in out


def test_measure_reports_config_errors(capsys):
    assert main(["--preset", "smoke", "--set", "train.nope=1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err
