"""``python -m salad_ray.run``: the command line of the active loop (salad_ray.driver).

    python -m salad_ray.run [--preset local] [--config FILE] [--set key=value ...]
                            [--run-dir DIR] [--resume] [--address ADDR] [--check | --plan]

It joins a running Ray cluster if there is one (``ray job submit --working-dir . --
python -m salad_ray.run`` works) and starts a local one otherwise, then runs every phase of the
run's graph that its directory does not hold yet (salad_ray.driver), in parallel where the graph
allows. ``--check`` runs the pre-flight alone; ``--plan`` prints the graph (each phase, what it
needs, whether the run directory holds it, what it asks of the cluster) and needs no Ray.

The arms of stage II are ``active`` (the config's gamma) and, with ``selection.compare_uniform``,
``uniform`` (gamma = 0, the paper's comparison: same stage-I student, probes, budget and seed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from salad_ray import connect, console
from salad_ray.config import ConfigError, add_config_arguments, load_config
from salad_ray.console import log
from salad_ray.preflight import PreflightFailed
from salad_ray.resources import ClusterTooSmall
from salad_ray.runconfig import run_config
from salad_ray.rundir import RunDir, final_milestones
from salad_ray.runstate import StateError


def check_only(args: argparse.Namespace) -> int:
    """``--check``: the pre-flight alone (salad_ray.connect.check), starting and writing nothing."""
    config = load_config(args.preset, args.config, args.overrides)
    connect.check(config, args.address, Path(args.layout) if args.layout else None)
    print(f"pre-flight: ok ({config.preset}): data sources, models, mixtures and resources", flush=True)
    return 0


def show_plan(args: argparse.Namespace, run: RunDir) -> int:
    """``--plan``: the phase graph of the run in ``--run-dir`` (its saved config), else of the config
    given; which phases the directory holds. Starts nothing and writes nothing."""
    from salad_ray.driver import Driver
    from salad_ray.phases import describe_graph

    try:
        config = (
            load_config(file=run.config)
            if run.config.is_file()
            else load_config(args.preset, args.config, args.overrides)
        )
        driver = Driver(config, run)
    except (ConfigError, StateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run {run.root} ({config.preset}):")
    print(describe_graph(driver.graph(), lambda name: name in driver.state.done))
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m salad_ray.run", description=__doc__.split("\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default=None, help="where the run lives (default runs/<preset>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir (start it if there is none)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that the run can start (sources, models, mixtures, resources); start nothing",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the run's phase graph (what each phase needs, whether --run-dir holds it, what it "
        "asks of the cluster) and exit; needs no Ray",
    )
    parser.add_argument(
        "--layout",
        default=None,
        help="with --check: a KubeRay or ray up layout to check the resources against",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a `ray start` cluster on this machine, "
        "else a new local instance); 'local' always starts a local instance",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.check:
        try:
            return check_only(args)
        except (ConfigError, ClusterTooSmall, PreflightFailed, ConnectionError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    run = RunDir(Path(args.run_dir or Path("runs") / (args.preset or "local")).resolve())
    if args.plan:
        return show_plan(args, run)
    try:
        config = run_config(
            run,
            preset=args.preset,
            file=args.config,
            overrides=args.overrides,
            resume=args.resume,
        )
    except (ConfigError, PreflightFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    console.setup()
    log.info("run %s (preset %s)", run.root, config.preset)
    from salad_ray.driver import Driver

    try:
        driver = Driver(config, run)
        connect.connect(config, args.address)
    except (StateError, ClusterTooSmall, PreflightFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    console.quiet_ray_data()
    t0 = time.time()
    driver.run()
    from salad_ray.report import summary
    from salad_ray.serve import serve_command

    print(
        f"\n{summary(config, driver.dirs, driver.state)}\n  wall time: {time.time() - t0:.0f} s", flush=True
    )
    final = driver.dirs.student(final_milestones(config)[-1])  # the active arm's last, else stage I's
    print(f"  talk to it: {serve_command(final, driver.dirs.config)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
