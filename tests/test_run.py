"""The active loop end to end (the smoke preset): the README's laptop section runs it uninterrupted
by `ray job submit` on a `ray start --head` cluster (``smoke_job``, salad_ray/testing/readme.py), and
the README's local run, killed twice and resumed each time by the README's resume line, must end
with the very samples, plans and step counts of that uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salad_ray.driver import Driver
from salad_ray.pipeline.shards import ShardStore
from salad_ray.report import summary
from salad_ray.run import main
from salad_ray.runconfig import run_config
from salad_ray.rundir import RunDir
from salad_ray.runstate import STATE_VERSION, RunState, read_state
from salad_ray.testing.processes import stop
from salad_ray.testing.readme import command_with, substitute

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}


def synthesized(run_dir: Path) -> dict[str, set[str]]:
    """Every committed sample id (shards and quarantine) of every store of a run."""
    return {store.name: ShardStore(store).done_ids() for store in sorted((run_dir / "data").iterdir())}


def plan(run_dir: Path, arm: str, r: int) -> dict:
    return json.loads((run_dir / "rounds" / arm / str(r) / "plan.json").read_text())


def wait_for_phase(proc: subprocess.Popen, run_dir: Path, phase: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while phase not in RunState(run_dir / "state.json").done:
        assert proc.poll() is None, f"the driver exited ({proc.returncode}) before {phase}"
        assert time.time() < deadline, f"{phase} not reached in {timeout} s"
        time.sleep(0.5)


# The README's active-loop block, as a user types it on a laptop (salad_ray.testing.readme): its
# local run, with the substitutions the README tests state, and its resume line.
LOCAL_RUN = command_with("python -m salad_ray.run --preset local --run-dir runs/local")
RESUME = command_with("python -m salad_ray.run --run-dir runs/local --resume")


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_the_readme_local_run_killed_and_resumed_ends_as_the_uninterrupted_run(smoke_job, tmp_path):
    """The README's local run (`--preset smoke` for `--preset local`, a temporary directory for
    runs/local), each on a local Ray instance of its own: killed twice (the driver and its instance,
    SIGKILL), continued each time by the README's resume line; it ends with the samples, plans and
    step counts of the uninterrupted laptop job, and with its report."""
    run_dir = tmp_path / "run"
    start = substitute(LOCAL_RUN, {"--preset local": "--preset smoke", "runs/local": str(run_dir)})
    resume = substitute(RESUME, {"runs/local": str(run_dir)})
    log = (tmp_path / "driver.log").open("w")

    def driver(command: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", "-e", "-c", command],
            cwd=ROOT,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    # killed while round 1's selected texts are being synthesized ...
    proc = driver(start)
    wait_for_phase(proc, run_dir, "active/round-1/plan")
    stop(proc, signal.SIGKILL)
    # ... and again while round 1 trains and round 2 is probed, side by side
    proc = driver(resume)
    wait_for_phase(proc, run_dir, "active/round-1/synthesis")
    time.sleep(3)
    stop(proc, signal.SIGKILL)
    assert "report" not in RunState(run_dir / "state.json").done
    finished = subprocess.run(
        ["bash", "-e", "-c", resume], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "started a local Ray instance" in finished.stdout + finished.stderr
    assert "wall time:" in finished.stdout and (run_dir / "report" / "report.md").is_file()
    assert smoke_job.succeeded, smoke_job.output[-3000:]
    reference = smoke_job.run_dir
    assert synthesized(run_dir) == synthesized(reference)
    state = RunState(run_dir / "state.json")
    assert state.notes.gap["stage II active"].step == state.notes.gap["stage II uniform"].step == 4
    for arm in ("active", "uniform"):
        for r in (1, 2):
            assert_same_decisions(plan(run_dir, arm, r), plan(reference, arm, r))


def assert_same_decisions(ours: dict, theirs: dict) -> None:
    """The same texts drawn, from the same measurements. M (so p) may differ in the 7th digit: two
    CPU training runs of the same steps agree to float32 rounding, not bit for bit."""
    assert ours.keys() == theirs.keys()
    assert [(c["text_id"], c["cluster"]) for c in ours["selected"]] == [
        (c["text_id"], c["cluster"]) for c in theirs["selected"]
    ]
    for key in ("m", "cer", "p", "pool_share"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
    for key in ("round", "gamma", "kept", "budget_seconds"):
        assert ours[key] == theirs[key], key


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_ray_job_submit_runs_the_smoke_loop_end_to_end(smoke_job):
    output, run_dir = smoke_job.output, smoke_job.run_dir
    assert smoke_job.succeeded, output[-5000:]
    assert "connected to the Ray cluster" in output  # it joined the cluster, started none
    assert "[salad-ray] phase stage1 done in" in output  # the driver's log records, plain in a job's log
    assert "Starting execution of Dataset" not in output  # Ray Data's INFO lines stay in its log file
    state = RunState(run_dir / "state.json")
    assert state.done[-2:] == ["eval", "report"]
    arms = ("active", "uniform")  # the smoke preset compares active with uniform selection
    assert {
        f"{arm}/round-{r}/{part}" for arm in arms for r in (1, 2) for part in ("plan", "synthesis", "train")
    } <= set(state.done)
    # stage I, then each arm, trained to the planned step counts (smoke: 4 steps, then 2 rounds x 2 steps)
    gap = state.notes.gap
    assert gap["stage I"].step == 4 and gap["stage II active"].step == gap["stage II uniform"].step == 4
    ids = synthesized(run_dir)
    assert set(ids) == {"heldout", "natural", "text", "probes-1", "probes-2"} | {
        f"{a}-{r}" for a in arms for r in (1, 2)
    }
    for arm in arms:
        chosen = [c["text_id"] for r in (1, 2) for c in plan(run_dir, arm, r)["selected"]]
        assert len(chosen) == len(set(chosen)) == sum(len(ids[f"{arm}-{r}"]) for r in (1, 2))  # none twice
        for r in (1, 2):
            assert state.notes.rounds[arm][r].seconds > 0 and abs(sum(plan(run_dir, arm, r)["p"]) - 1) < 1e-9
    for r in (1, 2):  # the arms saw the same measurements and differ by gamma alone
        active, uniform = plan(run_dir, "active", r), plan(run_dir, "uniform", r)
        assert active["m"] == uniform["m"] and active["cer"] == uniform["cer"]
        assert (active["gamma"], uniform["gamma"]) == (5.0, 0.0) and uniform["p"] == uniform["pool_share"]
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert list(results["systems"]) == [
        "original LLM",
        "cascade",
        "untrained student",
        "stage I",
        "stage II uniform",
        "stage II active",
    ]
    assert results["tasks"] == {"fortune-cloze": 6}
    report = (run_dir / "report" / "report.md").read_text()
    for row in ("| original LLM | text |", "| cascade | ASR transcript |", "| stage II uniform | speech |"):
        assert row in report  # the Table 3 rows, all measured
    assert "### Uniform round 2" in report and "| stage II active |" in report
    for png in (
        "heldout_gap.png",
        "losses.png",
        "m_per_cluster.png",
        "selection_share.png",
        "accuracy_vs_gap.png",
    ):
        assert (run_dir / "report" / png).stat().st_size > 5000
    assert "report:" in output and "uniform round 2:" in output  # the final summary


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_eval_cli_agrees_with_the_run(smoke_job, tmp_path):
    """`python -m salad_ray.eval` on the smoke preset: the original LLM and the cascade score as in
    the run's own evaluation (same items, prompts, speech and transcripts: all deterministic)."""
    assert smoke_job.succeeded
    proc = subprocess.run(
        [sys.executable, "-m", "salad_ray.eval", "--preset=smoke", f"--out={tmp_path}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    first = json.loads((smoke_job.run_dir / "eval" / "results.json").read_text())
    assert list(again["systems"]) == ["original LLM", "cascade"]
    for name in again["systems"]:
        assert again["systems"][name]["accuracy"] == first["systems"][name]["accuracy"]
    assert "| original LLM | text |" in proc.stdout and "| cascade | ASR transcript |" in proc.stdout


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_the_runs_final_student_answers_spoken_input(smoke_job, espeak, tmp_path):
    """The student that the run's closing line serves is a trained one, and it answers speech:
    `python -m salad_ray.chat` on it, fed an espeak-ng utterance, prints an answer."""
    import shlex

    import soundfile as sf

    from salad_ray.model.student import require_saved

    assert smoke_job.succeeded
    command = shlex.split(smoke_job.output.split("talk to it:", 1)[1].splitlines()[0])
    args = dict(arg.split("=", 1) for arg in command[3:])
    student = Path(args["student"])
    assert student.parent == smoke_job.run_dir / "students" and require_saved(student)
    wav = tmp_path / "question.wav"
    sf.write(wav, espeak.synthesize(["What is the capital of France?"], "en-us")[0], 16_000)
    proc = subprocess.run(
        [sys.executable, "-m", "salad_ray.chat", str(student), str(wav), "--max-tokens=8", "--preset=smoke"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job
def test_a_run_written_before_the_state_was_versioned_resumes_with_the_same_selections(
    smoke_job, tmp_path, capsys
):
    """The smoke run's directory with its state.json as written before version 1 (no version, no
    half-way phase): the driver resumes it, redoes nothing (no Ray is needed when every phase is done),
    keeps every selection and sample, and writes the state back at the current version. Then
    ``--plan`` prints its phase graph half finished."""
    import shutil

    assert smoke_job.succeeded, smoke_job.output[-3000:]
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_job.run_dir, run_dir, ignore=shutil.ignore_patterns("train"))
    finished = json.loads((run_dir / "state.json").read_text())
    assert finished.pop("version") == STATE_VERSION
    # before version 1 the active arm's half-way call was part of its round's train phase
    halves = [p for p in finished["done"] if p.startswith("active/") and p.endswith("/half")]
    assert halves == ["active/round-1/half"]  # smoke: 2 rounds, a half-way student in round 1
    before = {**finished, "done": [p for p in finished["done"] if p not in halves]}
    (run_dir / "state.json").write_text(json.dumps(before, indent=2))
    plans = sorted((run_dir / "rounds").glob("*/*/plan.json"))
    chosen = {p: p.read_text() for p in plans}
    samples = synthesized(run_dir)

    config = run_config(RunDir(run_dir), resume=True)
    Driver(config, RunDir(run_dir)).run()
    after = json.loads((run_dir / "state.json").read_text())
    assert after.pop("version") == STATE_VERSION
    assert sorted(after["done"]) == sorted(finished["done"])  # nothing redone: the halves upgraded
    assert after["notes"] == finished["notes"]
    assert {p: p.read_text() for p in plans} == chosen and synthesized(run_dir) == samples
    assert read_state(run_dir / "state.json").notes == read_state(smoke_job.run_dir / "state.json").notes

    # `--plan` on the run left half finished: each phase, what it needs, whether it is done, what it
    # asks of the cluster; it starts no Ray and writes nothing
    half = {**finished, "done": finished["done"][: len(finished["done"]) // 2]}
    (run_dir / "state.json").write_text(json.dumps(half))
    capsys.readouterr()
    assert main(["--plan", f"--run-dir={run_dir}"]) == 0
    plan_lines = capsys.readouterr().out.splitlines()
    assert json.loads((run_dir / "state.json").read_text()) == half
    status = {line.split("]")[1].split()[0]: line[3:8] for line in plan_lines if line.startswith("  [")}
    assert list(status) == [p.name for p in Driver(config, RunDir(run_dir)).graph()]
    assert {p for p, s in status.items() if s == "done "} == set(half["done"]) - {"report"}
    assert status["eval"] == "to do" and status["heldout"] == "done "
    assert any(re.search(r"stage1 +needs warmup  ->  students/stage1", x) for x in plan_lines)
    assert any("asks 1+ train worker x CPU 1" in line for line in plan_lines)


def test_the_summary_counts_every_record_of_each_pipeline(tmp_path, smoke_config):
    from salad_ray.accounting import PipelineReport, Reason

    driver = Driver(smoke_config, RunDir(tmp_path))
    report = PipelineReport("text", inputs=5, written=2)
    report.count(Reason.NOT_PROSE, 2)
    report.count(Reason.DUPLICATE)
    assert report.accounted() == report.inputs
    driver.state.finish("text", pipelines={"text": report})
    said = summary(smoke_config, RunDir(tmp_path), RunState(tmp_path / "state.json"))  # read back
    assert "data text: 5 inputs -> 2 written, 2 quarantined (not prose: 2), 1 skipped (duplicate: 1)" in said
