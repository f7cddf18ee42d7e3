"""README.md's shell commands, read from the file itself, and the laptop section's smoke job.

The job (:func:`laptop_job`) is the README's "run it on your own Ray cluster" block run as written:
`ray start --head`, `ray job submit` of the smoke preset, `ray stop`. The suite runs it once
(``smoke_job`` in tests/conftest.py): tests/test_readme.py checks the block and uses its run, and
tests/test_run.py takes it as the uninterrupted reference of the active loop.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
SMOKE_RUN = ROOT / "runs" / "smoke"  # where the laptop section's job writes its run


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```bash code blocks, in order."""
    blocks = re.findall(r"^([ \t]*)```bash\n(.*?)^[ \t]*```", text, re.S | re.M)
    return ["\n".join(line.removeprefix(indent) for line in body.splitlines()) for indent, body in blocks]


def commands(block: str) -> list[str]:
    """A block's commands, as a shell reads them: continued lines joined, comments kept, blank
    lines dropped (a command ends at a line end outside quotes and without a trailing backslash)."""
    out, current = [], ""
    for line in block.splitlines():
        current = f"{current}\n{line}" if current else line.strip()
        if current.endswith("\\"):
            continue
        try:
            shlex.split(current, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if current:
            out.append(current)
        current = ""
    assert not current, f"unterminated command in README: {current!r}"
    return out


def readme_commands(text: str | None = None) -> list[str]:
    return [
        c for block in shell_blocks(README.read_text() if text is None else text) for c in commands(block)
    ]


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def block_with(marker: str) -> list[str]:
    """The commands of the one README block that holds ``marker``."""
    (block,) = [b for b in shell_blocks(README.read_text()) if marker in b]
    return commands(block)


def command_with(start: str) -> str:
    """The one README command that starts with ``start``."""
    (command,) = [c for c in readme_commands() if c.startswith(start)]
    return command


def substitute(command: str, replacements: dict[str, str]) -> str:
    """``command`` with each of ``replacements`` made: the substitutions a test states (each must
    be in the command, so a README edit that drops one fails the test instead of skipping it)."""
    for old, new in replacements.items():
        assert old in command, f"the README command no longer names {old}: {command}"
        command = command.replace(old, new)
    return command


@dataclass(frozen=True)
class FinishedJob:
    succeeded: bool  # the block exited 0 and Ray said the job succeeded
    output: str  # what the block printed: ray job submit streams the driver's output
    run_dir: Path


def laptop_job() -> FinishedJob:
    """The laptop section's four lines, as written, from the repository's root: `ray start --head`
    with the CPUs `salad_ray.capacity` prints, `ray job submit` of the smoke preset, `ray stop`
    (``ray stop --force`` after it in any case)."""
    shutil.rmtree(SMOKE_RUN, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    block = "\n".join(block_with("ray start --head"))
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", block], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
        )
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)
    said = done.stdout + done.stderr
    return FinishedJob(done.returncode == 0 and "succeeded" in said, said, SMOKE_RUN)
