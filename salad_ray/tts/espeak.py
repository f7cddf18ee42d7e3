"""espeak-ng (Debian's formant synthesiser): CPU only, ~12 ms per sentence, many voices.

Voices are espeak-ng names with an optional variant: ``en-us``, ``en-gb``, ``en-us+f3``
(``espeak-ng --voices=en`` lists them; variants are files under espeak-ng-data/voices/!v).
"""

from __future__ import annotations

import shutil
import subprocess

from salad_ray.audio import AudioError, read_audio
from salad_ray.tts.base import SynthesisError, spoken_form


class EspeakTTS:
    name = "espeak-ng"

    def __init__(self, speed: int = 165, pitch: int = 50, max_seconds: float = 60.0):
        self.binary = shutil.which("espeak-ng")
        if self.binary is None:
            raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng (make setup does)")
        self.speed, self.pitch, self.max_seconds = speed, pitch, max_seconds

    def synthesize(self, texts: list[str], voice: str):
        return [self._speak(text, voice) for text in texts]

    def _speak(self, text: str, voice: str):
        if not spoken_form(text):
            raise SynthesisError(f"cannot speak an empty span ({text!r})")
        # Text goes through stdin: a span starting with '-' must not be read as an option.
        cmd = [self.binary, "-v", voice, "-s", str(self.speed), "-p", str(self.pitch), "--stdout", "--stdin"]
        proc = subprocess.run(cmd, input=spoken_form(text).encode(), capture_output=True, timeout=60)
        if proc.returncode != 0 or not proc.stdout:
            err = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
            raise SynthesisError(f"espeak-ng (voice {voice!r}) failed on {text[:60]!r}: {err}")
        try:
            return read_audio(
                proc.stdout, name=f"espeak-ng output for {text[:40]!r}", max_seconds=self.max_seconds
            )
        except AudioError as e:
            raise SynthesisError(str(e)) from e
