"""What a person watching a run sees: the run's log records, and its status line kept in view.

Everything the driver says goes through the ``salad_ray`` logger. On a terminal, rich renders the
records (time, message) and keeps the status line live at the bottom of the screen (:func:`live`);
elsewhere (a CI log, ``ray job logs``) records are plain timestamped lines, and the status line is
logged when it changes (salad_ray.status).

Ray Data keeps to its log file: its per-dataset INFO lines (the execution plan, its progress)
go to ``ray-data.log`` in the Ray session's log folder, not to the console, and on a terminal its
progress bars are off; the status line shows each pipeline's progress instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

log = logging.getLogger("salad_ray")
CONSOLE = Console()
PLAIN_FORMAT = "%(asctime)s [salad-ray] %(message)s"


def setup() -> None:
    """Send the ``salad_ray`` logger's INFO records to the console (once per process)."""
    if log.handlers:
        return
    if CONSOLE.is_terminal:
        handler: logging.Handler = RichHandler(console=CONSOLE, show_path=False, show_level=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def quiet_ray_data() -> None:
    """Ray Data's console: warnings only (its file log keeps every record; off a terminal its
    progress is logged at INFO, so this silences it too), and on a terminal no progress bars, which
    would tear the live status line."""
    import ray.data

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    if CONSOLE.is_terminal:
        ray.data.DataContext.get_current().enable_progress_bars = False


def live(line: Callable[[], str], refresh_seconds: float = 2.0) -> Live | None:
    """A status line redrawn in place below the log records, on a terminal (else None)."""
    if not CONSOLE.is_terminal:
        return None
    return Live(
        get_renderable=lambda: Text(line()),  # as written: no rich markup is read from it
        console=CONSOLE,
        refresh_per_second=1 / refresh_seconds,
        transient=True,
    )
