"""``python -m salad_ray.eval``: the text-speech gap of students on spoken multiple-choice benchmarks.

    python -m salad_ray.eval --run-dir runs/local                 # a run's students, its config
    python -m salad_ray.eval --preset local --student mine=DIR     # any saved students
                             [--config FILE] [--set key=value ...] [--out DIR]

With ``--run-dir`` the run's configuration (``config.yaml``, ``--set`` layered over it), its final
students (stage I and each stage-II arm; each round's with ``eval.round_students``) and its held-out
spoken set are used, the result goes to ``<run-dir>/eval/results.json`` and the run's report is
remade with it (``<run-dir>/report``; not with ``--out`` elsewhere). Otherwise the original LLM, the
cascade and the ``--student`` directories are scored on the configured benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from salad_ray.config import ConfigError, add_config_arguments, load_config

if TYPE_CHECKING:
    from salad_ray.eval.suite import StudentSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salad_ray.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None, help="evaluate this run's students with its config")
    add_config_arguments(parser)
    parser.add_argument("--student", action="append", default=[], metavar="NAME=DIR", help="a saved student")
    parser.add_argument("--out", default=None, help="output directory (default: <run-dir>/eval or ./eval)")
    args = parser.parse_args(argv)
    try:
        students: dict[str, Path | StudentSpec] = {}
        for item in args.student:
            name, sep, path = item.partition("=")
            if not sep or not Path(path).is_dir():
                raise ConfigError(f"--student {item!r}: expected NAME=DIR with DIR a saved student")
            students[name] = Path(path)
        heldout, run = None, None
        if args.run_dir:
            from salad_ray.eval.suite import run_students
            from salad_ray.rundir import HELDOUT, RunDir

            run = RunDir(Path(args.run_dir).resolve())
            if not run.config.is_file():
                raise ConfigError(f"{run.root} is not a run directory: {run.config} is missing")
            config = load_config(file=run.config, overrides=args.overrides)
            found = {n: s for n, s in run_students(config, run).items() if s.path.is_dir()}
            students = {**found, **students}
            heldout = run.store(HELDOUT)
            out = Path(args.out or run.eval)
        else:
            config = load_config(args.preset, args.config, args.overrides)
            out = Path(args.out or "eval")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from salad_ray.eval.suite import run_eval
    from salad_ray.eval.tables import forgetting_table, gap_table

    path = run_eval(config, students, heldout if heldout and heldout.is_dir() else None, out)
    results = json.loads(path.read_text())
    print(f"\n{gap_table(results)}\n")
    if students:
        print(f"{forgetting_table(results)}\n")
    print(f"results: {path}")
    if run is not None and out.resolve() == run.eval and run.state.is_file():
        from salad_ray.report import write_report
        from salad_ray.runstate import RunState

        ran = load_config(file=run.config)  # the report describes the run as it ran, not the --set keys
        notes = RunState(run.state, ran.stages.stage2_rounds).notes
        print(f"report: {write_report(ran, run, notes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
