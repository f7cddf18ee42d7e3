"""``python -m salad_ray.experiment``: the paper's central comparison, active against uniform selection.

    python -m salad_ray.experiment [--preset local] [--config FILE] [--set key=value ...]
                                   [--run-dir DIR] [--resume] [--address ADDR]

A run of :mod:`salad_ray.run` with ``selection.compare_uniform`` and ``eval.enabled`` on: one stage I,
then two stage-II arms from that same stage-I student, with the same probes, synthesis budget and
seed, selecting with the config's gamma (5 in the paper) and with gamma = 0. It ends by printing the
two rows side by side (held-out F and M, spoken accuracy and gap per task); the run's report holds
the full tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from salad_ray import run
from salad_ray.rundir import RunDir

COMPARISON = ["--set=selection.compare_uniform=true", "--set=eval.enabled=true"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = run.parser().parse_args(argv)
    code = run.main(argv + COMPARISON)
    if code != 0:
        return code
    from salad_ray.eval.tables import arms_table

    run_dir = Path(args.run_dir or Path("runs") / (args.preset or "local")).resolve()
    results = json.loads(RunDir(run_dir).results.read_text())
    print(f"\nactive against uniform selection ({run_dir}):\n\n{arms_table(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
