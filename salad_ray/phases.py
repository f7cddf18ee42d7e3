"""The driver's phases as a declared graph, and the one scheduler that runs it.

A :class:`Phase` names what it needs (other phases) and what it leaves in the run directory, and
says what it asks of the cluster. :func:`run_graph` starts every phase whose needs are done, as
many at once as are ready, each in a thread of one pool: the data pipelines side by side, round 1's
probes beside stage I, the arms of stage II side by side with each round prepared while the one
before it trains. A phase that is done (recorded in ``state.json``) is not run again; one that
fails stops new phases from starting, and the first failure is raised once the running ones end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from salad_ray.console import log


@dataclass(frozen=True)
class Phase:
    name: str  # as state.json records it when done
    run: Callable[[], None]  # does the phase's work and records it done
    needs: tuple[str, ...] = ()  # phases that must be done before it starts
    produces: str = ""  # what it leaves in the run directory
    asks: str = ""  # what it asks of the cluster
    always: bool = False  # redone at every run, done or not (the report: cheap, and its inputs may change)
    lane: str = ""  # where the run's timeline draws it (salad_ray.timeline)
    training: bool = False  # it trains a student (drawn in the training colour)


class GraphError(ValueError):
    """A graph that can never finish: a phase needing one that is not in it, or a cycle."""


def check_graph(phases: list[Phase]) -> None:
    """Every need names a phase of the graph, no name is declared twice, and there is no cycle."""
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise GraphError(f"phases declared twice: {sorted({n for n in names if names.count(n) > 1})}")
    by_name = {p.name: p for p in phases}
    for p in phases:
        if missing := [n for n in p.needs if n not in by_name]:
            raise GraphError(f"{p.name} needs {missing}, which the graph does not have")
    placed: set[str] = set()
    while len(placed) < len(phases):
        ready = [p.name for p in phases if p.name not in placed and set(p.needs) <= placed]
        if not ready:
            raise GraphError(f"a cycle among {sorted(set(names) - placed)}")
        placed |= set(ready)


def run_graph(
    phases: list[Phase],
    is_done: Callable[[str], bool],
    on_start: Callable[[Phase], None] = lambda phase: None,
    on_end: Callable[[Phase, float, BaseException | None], None] = lambda phase, seconds, error: None,
    on_tick: Callable[[], None] = lambda: None,
    tick_seconds: float = 20.0,
) -> None:
    """Run every phase that is not done once all it needs is done, in parallel where the graph allows.

    ``on_start`` sees each phase that starts, ``on_end`` each that ends, with its wall seconds and
    the exception it raised (None if it finished), and ``on_tick`` is called every ``tick_seconds``
    while phases run (a status line: an exception it raises is logged, and the run goes on). After
    a failure no phase starts; the first failure is raised once the running phases end (every one is
    seen by ``on_end``)."""
    if tick_seconds <= 0:
        raise ValueError(f"tick_seconds must be > 0, got {tick_seconds}")
    check_graph(phases)
    next_tick = time.monotonic() + tick_seconds
    pending = [p for p in phases if p.always or not is_done(p.name)]
    running: dict[Future, tuple[Phase, float]] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(len(pending), 1), thread_name_prefix="phase") as pool:
        while pending or running:
            if failure is None:
                for phase in [p for p in pending if all(is_done(n) for n in p.needs)]:
                    pending.remove(phase)
                    on_start(phase)
                    running[pool.submit(phase.run)] = (phase, time.time())
            if not running:
                if failure is None and pending:
                    stuck = {p.name: [n for n in p.needs if not is_done(n)] for p in pending}
                    failure = GraphError(f"phases that ran did not record themselves done: {stuck}")
                break
            finished, _ = wait(
                running, timeout=max(0.0, next_tick - time.monotonic()), return_when=FIRST_COMPLETED
            )
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + tick_seconds
                try:
                    on_tick()
                except Exception as e:  # a status line that cannot be drawn must not stop the run
                    log.warning("status: %r", e)
            for future in finished:
                phase, started = running.pop(future)
                error = future.exception()
                if error is None and not is_done(phase.name):
                    error = GraphError(f"phase {phase.name} ended without recording itself done")
                failure = failure or error
                on_end(phase, time.time() - started, error)
    if failure is not None:
        raise failure


POLL_SECONDS = 1.0  # how often :func:`wait_for` looks


def wait_for(path: Path, ended: Callable[[], bool], failure: str) -> None:
    """Return once ``path`` exists: a phase whose product another phase's work makes on its way. Once
    ``ended()`` (that work has stopped) and ``path`` still does not exist, raise ``failure``."""
    while not path.exists():
        if ended() and not path.exists():  # looked again: it may have been made just before the end
            raise RuntimeError(f"{failure}: {path} does not exist")
        time.sleep(POLL_SECONDS)


def describe_graph(phases: list[Phase], is_done: Callable[[str], bool]) -> str:
    """The graph as ``--plan`` prints it: one line per phase (done or to do, what it needs and
    produces), and what it asks of the cluster under it."""
    width = max(len(p.name) for p in phases)
    lines = []
    for p in phases:
        state = "done " if is_done(p.name) and not p.always else "to do"
        needs = ", ".join(p.needs) or "-"
        lines.append(f"  [{state}] {p.name:{width}s}  needs {needs}  ->  {p.produces or '-'}")
        if p.asks:
            lines.append(f"          {'':{width}s}  asks {p.asks}")
    return "\n".join(lines)
