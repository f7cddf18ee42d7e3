"""Where a stage's metrics go: Ray Train's own reports, recorded by a callback on its controller.

The workers call ``ray.train.report(metrics)`` (every rank the same all-reduced values); Ray Train
gathers them on its controller and calls :class:`MetricsLog.after_report` there. The callback
appends rank 0's metrics, with the job's name and the time, as one line of the run's
``metrics.jsonl`` (what the status line, the learning curve and the report read), and hands them to
the experiment tracker the config names (``train.tracker``). The driver gets the last report and
the latest checkpoint back from the :class:`ray.train.Result` of ``fit()``.

Trackers write local files under ``<run>/tracking/<tracker>/<job>``:

* ``none``: no tracker;
* ``tensorboard``: TensorBoard event files (``tensorboard --logdir <run>/tracking/tensorboard``),
  one scalar per metric, at the stage's step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from salad_ray.files import append_json_line


class MetricsLog(UserCallback):
    """Records every report of job ``job`` in ``metrics`` (JSON lines) and in the tracker."""

    def __init__(self, job: str, metrics: Path, tracker: str = "none", tracking: Path | None = None):
        if tracker != "none" and tracking is None:
            raise ValueError(f"tracker {tracker!r} needs a tracking directory")
        self.job, self.metrics, self.tracker, self.tracking = job, Path(metrics), tracker, tracking
        self._writer = None  # the tensorboard SummaryWriter, opened on the first report

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        record = metrics[0]  # rank 0's; every rank reports the same all-reduced values
        append_json_line(self.metrics, {"stage": self.job, "time": time.time(), **record})
        if self.tracker == "tensorboard":
            self._tensorboard(record)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tracking / "tensorboard" / self.job))
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self._writer.add_scalar(key, value, global_step=record["step"])
        self._writer.flush()

    def __getstate__(self) -> dict:  # the callback travels to the controller before any report
        return {**self.__dict__, "_writer": None}
