"""Talk to a saved student from the terminal, with no Ray cluster: speech (and text) in, text out.

    python -m salad_ray.chat runs/local/students/active-round-3 question.wav --prompt "Answer briefly."

Each audio file (wav, flac, mp3, any rate and channel count) and then the prompt form one user
message, read through the LLM's chat template as the server reads it
(:class:`salad_ray.serve.engine.StudentEngine`); the answer is printed as it is generated.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from salad_ray.audio import AudioError, read_audio
from salad_ray.config import ConfigError, StudentServerConfig, add_config_arguments, load_config
from salad_ray.generation import SamplingParams
from salad_ray.serve.engine import StudentEngine
from salad_ray.serve.prompt import Turn
from salad_ray.serve.protocol import RequestError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m salad_ray.chat", description=__doc__.split("\n")[0])
    p.add_argument("student", help="a saved student's directory (SpeechLM.load)")
    p.add_argument("audio", nargs="*", help="audio files, heard in this order before the prompt")
    p.add_argument("--prompt", default=None, help="text after the audio")
    p.add_argument("--system", default=None, help="a system message before the user's")
    p.add_argument("--max-tokens", type=int, default=None, help="answer length (default: student_server's)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (the default) is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the GPU if there is one)")
    add_config_arguments(p)  # student_server settings: context, audio limit, dtype
    return p


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parser().parse_args(argv)
    if not args.audio and not args.prompt:
        print("error: give an audio file, a --prompt, or both", file=sys.stderr)
        return 2
    try:
        settings: StudentServerConfig = load_config(args.preset, args.config, args.overrides).student_server
        parts: list = [read_audio(path, max_seconds=settings.max_audio_seconds) for path in args.audio]
    except (ConfigError, AudioError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    turns = ([Turn("system", [args.system])] if args.system else []) + [
        Turn("user", parts + ([args.prompt] if args.prompt else []))
    ]
    engine = StudentEngine.load(args.student, settings, device=args.device)
    params = SamplingParams(args.max_tokens, args.temperature, args.top_p, args.seed)
    try:
        for delta in engine.answer(turns, params):
            out.write(delta.text)
            out.flush()
    except RequestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
