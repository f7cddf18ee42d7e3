"""Evaluation: spoken multiple-choice benchmarks in text, speech and cascade modes (the gap)."""
