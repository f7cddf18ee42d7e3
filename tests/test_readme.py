"""Every shell command in README.md's ``bash`` blocks is accounted for, read from README.md itself.

Each command is one of:

* **run**: a test runs it exactly as written (the command text comes from README.md, so an
  edit there changes what runs);
* **ci**: what `.ci/run` runs (``make test``: the suite cannot run itself);
* **cluster**: it needs a Kubernetes cluster, a registry or GPUs (docker, kubectl, the paper
  presets).

Where a command runs the `local` preset's whole loop or uses what it wrote (runs/local), the test
runs it on the `smoke` preset's run instead and states the substitution (:func:`substitute`).

Every command, of every kind, is also checked statically (:func:`problems`): bash parses it, the
repository files it names exist, and each ``--flag`` it passes is in its tool's ``--help`` (for the
tools this machine has; docker and kubectl it has not). A command added to the README that none of
the kinds claims fails :func:`test_every_readme_command_is_accounted_for`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from salad_ray.config import load_config
from salad_ray.testing.processes import stop, wait_http
from salad_ray.testing.readme import (
    BIN,
    README,
    ROOT,
    SMOKE_RUN,
    block_with,
    command_with,
    readme_commands,
    substitute,
    words,
)

ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
REPO_DIRS = ("k8s/", "services/", "clusters/", "salad_ray/", "tools/", "benchmarks/", "tests/")
CLUSTER_TOOLS = ("docker", "kubectl")
CLUSTER_PRESETS = ("paper-3b", "paper-7b")


def kind(command: str) -> str:
    w = words(command)
    line = " ".join(w)
    if re.match(rf"^(\w+=\$\()?({'|'.join(CLUSTER_TOOLS)})\b", command):
        return "cluster"
    if any(p in w for p in CLUSTER_PRESETS):  # the paper's models and data: a GPU cluster, the hub
        return "cluster"
    if line == "make test":
        return "ci"
    if command in run_commands():
        return "run"
    return "unaccounted"


# ------------------------------------------------------------------------------- static checks


@functools.cache
def help_text(tool: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*tool, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    return done.stdout + done.stderr


def _tool(w: list[str]) -> tuple[tuple[str, ...], str] | None:
    """The command whose --help lists the flags of ``w``, and its name (None: not on this machine)."""
    if w[:2] == ["python", "-m"]:
        return (sys.executable, "-m", w[2]), w[2]
    if w[0] in ("ray", "serve"):
        sub = [x for x in w[1:3] if not x.startswith("-")]
        sub = sub[:2] if w[0] == "ray" and sub[:1] == ["job"] else sub[:1]
        return (str(BIN / w[0]), *sub), " ".join([w[0], *sub])
    if w[0] == "curl" and shutil.which("curl"):
        return ("curl", "--help", "all"), "curl"
    return None


def problems(command: str) -> list[str]:
    """What is wrong with a README command, checked without running it (module docstring)."""
    found = []
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    if syntax.returncode:
        found.append(f"bash cannot parse it: {syntax.stderr.strip()}")
        return found
    substituted = re.findall(r"\$\(([^()]*)\)", command)  # $(...): a command of its own
    for inner in substituted:
        found += problems(inner)
    w = words(re.sub(r"\$\(([^()]*)\)", "X", command))
    for token in w:
        path = token.split("=", 1)[-1]
        if path.startswith(REPO_DIRS) and "<" not in path and not (ROOT / path).exists():
            found.append(f"names {path}, which is not in the repository")
    if w[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        found += [f"make has no target {t!r}" for t in w[1:] if "=" not in t and t not in targets]
    # the command, and after a lone `--` the command it runs (ray job submit -- python -m ...)
    parts = [w]
    if "--" in w:
        cut = w.index("--")
        parts = [w[:cut], w[cut + 1 :]]
    for part in parts:
        if not part or (tool := _tool(part)) is None:
            continue
        argv, name = tool
        text = help_text(argv)
        for token in part:
            flag = token.split("=", 1)[0]
            if flag.startswith("--") and len(flag) > 2 and not re.search(rf"{re.escape(flag)}\b", text):
                found.append(f"{name} has no flag {flag}")
    return found


# ------------------------------------------------------------------------------- the commands run


@functools.cache
def run_commands() -> frozenset[str]:
    """The README commands the tests below run, as written or with the substitution they state."""
    return frozenset(
        [
            *block_with("ray start --head"),
            *block_with("serve run services/teacher.yaml"),
            command_with("make run"),
            command_with("python -m salad_ray.run --run-dir runs/local --resume"),
            # run, killed and resumed by tests/test_run.py (--preset smoke, a temporary run directory)
            command_with("python -m salad_ray.run --preset local --run-dir runs/local"),
            command_with("serve run salad_ray.serve.deployment:build_app"),
            command_with("serve run services/student.yaml"),
            command_with("curl -sN 127.0.0.1:8000/v1/chat/completions"),
            command_with("python -m salad_ray.chat"),
            command_with("python -m salad_ray.capacity"),
            command_with("python -m salad_ray.local_cluster"),
            command_with("python -m salad_ray.run --preset smoke --check"),
            command_with("python -m salad_ray.run --preset local --plan"),
            *block_with("python -m salad_ray.measure"),
        ]
    )


def test_every_readme_command_is_accounted_for():
    found = readme_commands()
    assert len(found) >= 20
    unaccounted = [c for c in found if kind(c) == "unaccounted"]
    assert not unaccounted, f"README commands no test runs or checks: {unaccounted}"
    assert "make test" in (ROOT / ".ci/run").read_text()  # the `ci` kind


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: " ".join(words(c))[:60])
def test_readme_command_parses_and_names_what_exists(command):
    assert problems(command) == []


def test_the_checks_fail_a_broken_command():
    broken = "python -m salad_ray.capacity --preset smoke --no-such-flag k8s/nowhere.yaml"
    assert problems(broken) == [
        "names k8s/nowhere.yaml, which is not in the repository",
        "salad_ray.capacity has no flag --no-such-flag",
    ]
    assert problems("ray job submit --working-dri . -- python -m salad_ray.run --presett smoke") == [
        "ray job submit has no flag --working-dri",
        "salad_ray.run has no flag --presett",
    ]
    assert problems("make rnu") == ["make has no target 'rnu'"]
    assert problems("echo 'unclosed")[0].startswith("bash cannot parse it")
    readme = README.read_text() + "\n```bash\npython -m salad_ray.brand_new --fast\n```\n"
    assert [c for c in readme_commands(readme) if kind(c) == "unaccounted"] == [
        "python -m salad_ray.brand_new --fast"
    ]


def run_as_written(command: str, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", command], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_the_capacity_check_runs_as_written():
    done = run_as_written(command_with("python -m salad_ray.capacity"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == 5 and "FAIL" not in done.stdout


@pytest.mark.machine_wide
def test_the_preflight_check_runs_as_written():
    """Like the run, the check joins a Ray cluster running on this machine: it runs before the
    suite starts one (the machine_wide mark)."""
    done = run_as_written(command_with("python -m salad_ray.run --preset smoke --check"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pre-flight: ok" in done.stdout


def test_the_phase_graph_command_runs_as_written(tmp_path):
    """`--plan` lists every phase of the local run's graph and starts nothing (here in a directory of
    its own, so that it reads no run a developer left in runs/local)."""
    from salad_ray.driver import Driver
    from salad_ray.rundir import RunDir

    done = run_as_written(command_with("python -m salad_ray.run --preset local --plan"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = [line.split("]")[1].split()[0] for line in done.stdout.splitlines() if line.startswith("  [")]
    assert listed == [p.name for p in Driver(load_config("local"), RunDir(tmp_path)).graph()]
    assert "[done ]" not in done.stdout and not (tmp_path / "runs").exists()


def test_the_stale_address_command_runs_as_written():
    done = run_as_written(command_with("python -m salad_ray.local_cluster"))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_the_configuration_layers_run_as_written(tmp_path):
    """The configuration section's block in a directory of its own, with `--preset smoke` for
    `--preset local` (the substitution): the file's and the --set layer's values both hold."""
    block = "\n".join(block_with("python -m salad_ray.measure"))
    done = run_as_written(substitute(block, {"--preset local": "--preset smoke"}), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "misalignment  M =" in done.stdout
    result = json.loads((tmp_path / "gap.json").read_text())
    assert not load_config("smoke").data.heldout_only  # so no unseen-domain samples beside the 8
    assert result["student"] == "untrained" and result["heldout_samples"] == 8


# The commands below start Ray and `ray stop` stops every Ray process on the machine: they run
# before any other test starts Ray (the machine_wide mark, tests/conftest.py).
# make run's student and config, as the smoke run names them (the substitution the tests state)
FINAL_STUDENT = {
    "runs/local/students/active-round-3": str(SMOKE_RUN / "students" / "active-round-2"),
    "runs/local/config.yaml": str(SMOKE_RUN / "config.yaml"),
}


def background(command: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_laptop_cluster_section_runs_as_written(smoke_job):
    assert smoke_job.succeeded, smoke_job.output[-4000:]
    assert "wall time:" in smoke_job.output, smoke_job.output[-4000:]
    assert (SMOKE_RUN / "report" / "report.md").exists()


@pytest.mark.slow
@pytest.mark.machine_wide
def test_make_run_and_resume_continue_the_smoke_run(smoke_job):
    """`make run` with PRESET=smoke (the substitution) and the resume line with runs/smoke for
    runs/local: both continue the laptop job's finished run and print its summary."""
    assert smoke_job.succeeded
    for command in (
        command_with("make run").replace("make run", "make run PRESET=smoke", 1),
        substitute(
            command_with("python -m salad_ray.run --run-dir runs/local --resume"),
            {"runs/local": "runs/smoke"},
        ),
    ):
        done = run_as_written(command, timeout=600)
        assert done.returncode == 0, (command, (done.stdout + done.stderr)[-3000:])
        assert "wall time:" in done.stdout and "talk to it:" in done.stdout, done.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_teacher_service_commands_run_as_written():
    """`serve run services/teacher.yaml`, then the README's curl call on 127.0.0.1:8000."""
    serve_run, call = block_with("serve run services/teacher.yaml")
    proc = background(serve_run)
    try:
        wait_http("http://127.0.0.1:8000/v1/models", timeout=400, proc=proc)
        done = run_as_written(call)
        assert done.returncode == 0, done.stderr
        (choice,) = json.loads(done.stdout)["choices"]
        assert choice["prompt_logprobs"][0] is None and len(choice["prompt_logprobs"]) == 4
        assert all(len(row) >= 5 for row in choice["prompt_logprobs"][1:])  # top-5 (+ the own token)
    finally:
        stop(proc, signal.SIGINT)


@pytest.fixture(scope="module")
def question(espeak, tmp_path_factory) -> Path:
    """question.wav, which the README's chat commands send, in a directory of its own."""
    import soundfile as sf

    where = tmp_path_factory.mktemp("asker")
    sf.write(
        where / "question.wav", espeak.synthesize(["What is the capital of France?"], "en-us")[0], 16_000
    )
    return where


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_student_service_and_its_curl_call_run_as_written(smoke_job, question):
    """`serve run ...:build_app student=... config=...` with the smoke run's final student for make
    run's (FINAL_STUDENT), then the README's streaming curl call with question.wav."""
    assert smoke_job.succeeded
    proc = background(
        substitute(command_with("serve run salad_ray.serve.deployment:build_app"), FINAL_STUDENT)
    )
    try:
        wait_http("http://127.0.0.1:8000/v1/models", timeout=400, proc=proc)
        with urllib.request.urlopen("http://127.0.0.1:8000/v1/models", timeout=30) as answer:
            served = [m["id"] for m in json.load(answer)["data"]]  # this student, not an earlier server
        assert served == ["active-round-2"], served
        done = run_as_written(command_with("curl -sN 127.0.0.1:8000/v1/chat/completions"), cwd=question)
        assert done.returncode == 0, done.stderr
        events = [
            line.removeprefix("data: ") for line in done.stdout.splitlines() if line.startswith("data: ")
        ]
        assert events and events[-1] == "[DONE]" and len(events) >= 3, done.stdout[-2000:]
        assert json.loads(events[0])["object"] == "chat.completion.chunk"
    finally:
        stop(proc, signal.SIGINT)


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_chat_command_runs_with_the_smoke_runs_student(smoke_job, question):
    assert smoke_job.succeeded
    student = {k: v for k, v in FINAL_STUDENT.items() if "students" in k}
    done = run_as_written(substitute(command_with("python -m salad_ray.chat"), student), cwd=question)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the student said nothing"


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_student_services_file_runs_as_written(smoke_job, tmp_path):
    """`serve run services/student.yaml` as written, from a directory whose services/student.yaml is
    the repository's file and whose runs/local holds the smoke run's final student and config
    (FINAL_STUDENT, as links: the substitution); it serves the API, answers a chat request within
    its token cap, and serves the page."""
    assert smoke_job.succeeded
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "student.yaml").symlink_to(ROOT / "services" / "student.yaml")
    for name, target in FINAL_STUDENT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(target)
    proc = background(command_with("serve run services/student.yaml"), cwd=tmp_path)
    try:
        wait_http("http://127.0.0.1:8000/v1/models", timeout=400, proc=proc)
        with urllib.request.urlopen("http://127.0.0.1:8000/v1/models", timeout=30) as answer:
            served = Path(FINAL_STUDENT["runs/local/students/active-round-3"]).name  # the link's target
            assert [m["id"] for m in json.load(answer)["data"]] == [served]
        request = urllib.request.Request(
            "http://127.0.0.1:8000/v1/chat/completions",
            data=json.dumps(
                {"model": served, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            reply = json.load(answer)
        assert (
            reply["usage"]["completion_tokens"] <= 4 and reply["choices"][0]["message"]["content"] is not None
        )
        with urllib.request.urlopen("http://127.0.0.1:8000/", timeout=30) as answer:
            assert answer.headers.get_content_type() == "text/html" and answer.read()
    finally:
        stop(proc, signal.SIGINT)


def test_the_architecture_module_table_names_every_module_and_only_real_ones():
    """Each module of salad_ray is in the README's module table, itself or by its folder (a row
    ending in ``/``), and each path the table names exists."""
    section = README.read_text().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    named = {path for cell in first_cells for path in re.findall(r"`([^`]+)`", cell)}
    for path in named:
        assert list(ROOT.glob(path)), f"the module table names {path}, which does not exist"
    folders = tuple(p for p in named if p.endswith("/"))
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "salad_ray").rglob("*.py"))
        if p.name != "__init__.py"
        and str(p.relative_to(ROOT)) not in named
        and not str(p.relative_to(ROOT)).startswith(folders)
    ]
    assert missing == [], f"modules the README's module table leaves out: {missing}"
