"""Helpers of the tests that start servers and drivers as processes: ports, readiness, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Return once ``url`` answers; RuntimeError if ``proc`` exits first, TimeoutError after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def session(sid: int) -> list[int]:
    """The processes of session ``sid`` (Linux): a process started with ``start_new_session`` and
    everything it started, Ray's workers included, which run in process groups of their own."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):  # gone meanwhile
            zombie = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            if os.getsid(int(entry)) == sid and not zombie:
                pids.append(int(entry))
    return pids


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Signal a process started in a session of its own and wait ``timeout`` s for it to exit, then
    SIGKILL whatever of its session is left (a Serve proxy still holding its port, say) and return
    once all of it is gone."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + timeout
    while left := session(proc.pid):
        if time.time() > deadline:
            raise TimeoutError(f"processes {left} of {proc.args[:4]} outlived SIGKILL")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
