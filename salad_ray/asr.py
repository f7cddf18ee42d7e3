"""Speech recognition for the synthetic-speech quality filter: Whisper (CTranslate2) and CER.

The character error rate of a sample is the Levenshtein distance (rapidfuzz's) between the normalised reference
text and the normalised transcript, divided by the reference length (summed over a sample's spans:
total edits / total reference characters). Normalisation lower-cases, drops punctuation and
collapses white space, so the filter measures intelligibility, not formatting.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from salad_ray.audio import SAMPLE_RATE, log_mel

WINDOW_SECONDS = 30  # Whisper decodes 30 s windows
MAX_TOKENS = 224  # Whisper's decoder holds 448 positions, half for the prompt


def check_tokens(reference_tokens: int) -> int:
    """Tokens worth decoding to check a span of ``reference_tokens``: a transcript cut there already
    differs from the reference by about its own length (CER near 1 or more), so the verdict under
    any threshold below 1 is the uncut one's. Speech that says the text ends long before; noise
    (an untrained TTS) otherwise decodes all 224 tokens of hallucination."""
    return 2 * reference_tokens + 16


def normalize_for_cer(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(
        ch if ch.isalnum() or ch.isspace() else " " for ch in text if not unicodedata.combining(ch)
    )
    return re.sub(r"\s+", " ", text).strip()


def cer(references: list[str], hypotheses: list[str]) -> float:
    """Total character edits over total reference characters, after normalisation."""
    refs = [normalize_for_cer(r) for r in references]
    hyps = [normalize_for_cer(h) for h in hypotheses]
    edits = sum(Levenshtein.distance(r, h) for r, h in zip(refs, hyps, strict=True))
    return edits / max(1, sum(len(r) for r in refs))


class WhisperASR:
    """Greedy Whisper transcription with CTranslate2 (English)."""

    def __init__(self, path: str | Path, threads: int = 0, beam_size: int = 1):
        import ctranslate2
        from tokenizers import Tokenizer

        path = Path(path)
        self.beam_size = beam_size
        self.model = ctranslate2.models.Whisper(
            str(path), device="cpu", compute_type="float32", intra_threads=threads
        )
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        prompt = ["<|startoftranscript|>"]
        if self.model.is_multilingual:
            prompt += ["<|en|>", "<|transcribe|>"]
        self.prompt = [*prompt, "<|notimestamps|>"]

    def tokens(self, text: str) -> int:
        """How many Whisper tokens ``text`` is."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def transcribe(self, waves: list[np.ndarray], max_tokens: int = MAX_TOKENS) -> list[str]:
        """One transcript per 16 kHz waveform (each at most 30 s), of at most ``max_tokens`` tokens."""
        import ctranslate2

        window = WINDOW_SECONDS * SAMPLE_RATE
        too_long = [k for k, w in enumerate(waves) if len(w) > window]
        if too_long:
            raise ValueError(f"spans {too_long} are longer than Whisper's {WINDOW_SECONDS} s window")
        mels = np.stack([log_mel(np.pad(w, (0, window - len(w))), self.model.n_mels).numpy() for w in waves])
        results = self.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, dtype=np.float32)),
            [self.prompt] * len(waves),
            beam_size=self.beam_size,
            max_length=min(max_tokens, MAX_TOKENS),
        )
        return [self.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
