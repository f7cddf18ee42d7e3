"""F, M and D of a run's students, each against the first, paired over the samples of one of the run's
spoken stores (the held-out set by default): what a stage moved, beyond the stage I and stage II
students that the report's "What stage II moved" section covers (the warm-up's student, each
round's), and on the stores a stage trained on as well as on held-out speech.

    python tools/heldout_shift.py --run-dir runs/local --student stage1 --student warmup \
        --student active-round-3 [--store heldout] [--limit N] [--out FILE]

``--student`` names are directories under ``<run-dir>/students``; the first is the reference. D is
the distillation KL from the teacher on text to the student on speech over M's targets
(salad_ray.metrics): M can fall because the student's text side drifts toward its speech side (F
rises), D only as its speech side nears the teacher. ``--store`` names a store under
``<run-dir>/data`` (``--limit``: its first N samples). Prints one JSON line per student (and appends
it to ``--out``): F, M and D per token, M's and D's 95 % bootstrap intervals over the samples, and
the paired changes in M and D from the reference.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from salad_ray.config import load_config
from salad_ray.eval.stats import paired_ratio_difference, ratio_interval
from salad_ray.files import append_json_line
from salad_ray.metrics import per_token
from salad_ray.model.student import SpeechLM
from salad_ray.objective import BatchGap, samples_gap
from salad_ray.pipeline.shards import ShardStore
from salad_ray.rundir import HELDOUT, RunDir


class NoSpeechTargets(ValueError):
    """A store none of whose samples has a text target after speech: M and D are not defined on it."""


@torch.no_grad()
def heldout_shifts(
    run: RunDir, students: list[str], store: str = HELDOUT, limit: int | None = None
) -> list[dict]:
    """Each student's F, M, D on the first ``limit`` samples of ``store`` and its paired changes in M
    and D from ``students[0]``'s."""
    config = load_config(file=run.config)
    samples = list(itertools.islice(ShardStore(run.store(store)).samples(), limit))
    if not any(s.audio for s in samples):
        raise NoSpeechTargets(f"no sample of {store} is spoken: M and D are not defined there")
    reference: BatchGap | None = None
    results = []
    for name in students:
        student = SpeechLM.load(run.students / name).eval()
        gap = samples_gap(student, samples, config.eval.batch_size, student.device, progress=name)
        if reference is None:
            if not gap.m_counts.sum():
                raise NoSpeechTargets(
                    f"no text target of {store} follows speech: M and D are not defined there"
                )
            reference = gap
        if not torch.equal(gap.m_counts, reference.m_counts):  # the same samples, the same targets
            raise RuntimeError(f"{name} and {students[0]} count different targets on {store}")
        counts = gap.m_counts.numpy()
        results.append(
            {
                "student": name,
                "store": store,
                "samples": len(samples),
                "f": per_token(gap.f_sums, gap.f_counts),
                "m": ratio_interval(gap.m_sums.numpy(), counts).to_dict(),
                "d": ratio_interval(gap.d_sums.numpy(), counts).to_dict(),
                "reference": students[0],
                "m_change": paired_ratio_difference(gap.m_sums, reference.m_sums, counts).to_dict(),
                "d_change": paired_ratio_difference(gap.d_sums, reference.d_sums, counts).to_dict(),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/local")
    parser.add_argument(
        "--student",
        action="append",
        required=True,
        help="a student under <run-dir>/students; the first is the reference",
    )
    parser.add_argument("--store", default=HELDOUT, help="a spoken store under <run-dir>/data")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many of its samples")
    parser.add_argument("--out", default=None, help="a JSON-lines file to append the results to")
    args = parser.parse_args()
    run = RunDir(Path(args.run_dir).resolve())
    missing = [s for s in args.student if not (run.students / s).is_dir()]
    if missing:
        parser.error(f"{run.students} has no student {', '.join(missing)}")
    if not run.store(args.store).is_dir():
        parser.error(f"no store {args.store}: {run.store(args.store)} does not exist")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit {args.limit}: read at least one sample")
    try:
        results = heldout_shifts(run, args.student, args.store, args.limit)
    except NoSpeechTargets as e:
        parser.error(str(e))
    for result in results:
        print(json.dumps(result), flush=True)
        if args.out:
            append_json_line(args.out, result)


if __name__ == "__main__":
    main()
