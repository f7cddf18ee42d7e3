"""The warmup-stable-decay (WSD) learning-rate schedule of the paper.

    factor(s) = (s + 1) / W                  for s < W                    (linear warmup)
              = 1                            for W <= s < D               (stable)
              = (T - s) / (T - D)            for s >= D, D = T - round(f T) (linear decay to 0 at T)

with W = ``warmup_steps``, T the stage's total steps and f = ``decay_fraction``. The optimiser's
learning rate of each parameter group is its base rate times factor(step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WSD:
    """A picklable, state-dict-friendly callable for torch's LambdaLR."""

    total_steps: int
    warmup_steps: int
    decay_fraction: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_start = self.total_steps - round(self.decay_fraction * self.total_steps)
        if step >= decay_start and self.total_steps > decay_start:
            return max(0.0, (self.total_steps - step) / (self.total_steps - decay_start))
        return 1.0
