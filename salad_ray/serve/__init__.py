"""Serving a trained student: speech in, text out.

* :mod:`salad_ray.serve.protocol`: OpenAI's chat-completions request (pydantic) and its answers;
* :mod:`salad_ray.serve.prompt`: a conversation of text and audio parts -> a mixed speech/text sample,
  through the LLM's chat template;
* :mod:`salad_ray.serve.engine`: a saved student that prepares requests and decodes batches of them
  (:mod:`salad_ray.generation`), in-process, with no Ray;
* :mod:`salad_ray.serve.deployment`: the Ray Serve application (``/v1/chat/completions`` streamed,
  ``/v1/models``, ``/health``, and the browser page at ``/``);
* ``python -m salad_ray.chat``: the terminal command.

Only :mod:`salad_ray.serve.deployment` imports Ray.
"""

from __future__ import annotations

import shlex
from pathlib import Path

# The Serve application builder, for `serve run`, services/student.yaml and RayService manifests.
APP = "salad_ray.serve.deployment:build_app"


def serve_command(student: str | Path, config: str | Path | None = None) -> str:
    """The shell command that serves ``student`` (a saved student directory) on 127.0.0.1:8000, with
    the server settings of the run configuration file ``config`` (default: the ``local`` preset's)."""
    args = [f"student={Path(student)}"] + ([f"config={Path(config)}"] if config else [])
    return shlex.join(["serve", "run", APP, *args])
