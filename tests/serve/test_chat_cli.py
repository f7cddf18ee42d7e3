"""`python -m salad_ray.chat`: the answer printed as it is generated, with no Ray at all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from salad_ray.chat import main
from salad_ray.config import StudentServerConfig
from salad_ray.generation import SamplingParams
from salad_ray.serve.engine import StudentEngine
from salad_ray.serve.prompt import Turn

pytestmark = pytest.mark.slow  # loads a student, seconds


class Writes:
    """A text stream that keeps each write apart."""

    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def expected(student_dir, wave, prompt: str, max_tokens: int) -> str:
    engine = StudentEngine.load(student_dir, StudentServerConfig(), device="cpu")
    params = SamplingParams(max_tokens, temperature=0)
    return "".join(d.text for d in engine.answer([Turn("user", [wave, prompt])], params))


def test_the_command_prints_the_answer_with_no_ray(student_dir, wav_files, utterances):
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "salad_ray.chat",
        str(student_dir),
        wav_files["weather"],
        "--prompt",
        "What did you hear?",
        "--max-tokens",
        "12",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout == expected(student_dir, utterances["weather"], "What did you hear?", 12) + "\n"
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "salad_ray.serve.engine" in imported
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}  # no Ray cluster, no Ray


def test_the_answer_streams_out_as_it_is_made(student_dir, wav_files, utterances):
    out = Writes()
    assert (
        main([str(student_dir), wav_files["numbers"], "--prompt", "Again?", "--max-tokens", "12"], out) == 0
    )
    answer = "".join(out.writes)
    assert answer == expected(student_dir, utterances["numbers"], "Again?", 12) + "\n"
    assert len([w for w in out.writes if w]) > 2 or len(answer.strip()) <= 2  # piece by piece


def test_bad_input_is_an_error_not_a_traceback(student_dir, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    assert main([str(student_dir), str(broken)]) == 2
    assert "unreadable audio" in capsys.readouterr().err
    assert main([str(student_dir)]) == 2
    assert main([str(student_dir), "--prompt", "hi", "--max-tokens", "100000"]) == 2
    assert "tokens do not fit" in capsys.readouterr().err
