"""A run's names and paths, in one place.

Every phase, shard store, student, plan, score file and Ray Train job of a run is named here, from
typed values: an :class:`Arm`, a round number, a :class:`Milestone`. Other modules ask a
:class:`RunDir` for a path and a milestone for its label; none builds such a name or parses one.

    <run-dir>/
      config.yaml  state.json  metrics.jsonl  timeline.jsonl (each phase's start and end)
      data/{heldout,natural,text,probes-<r>,<arm>-<r>}/   shard stores
      pool/                     texts.parquet, centroids.npy
      rounds/probes/<r>/        scores.parquet (per probe: M, distillation KL, CER, duration)
      rounds/<arm>/<r>/         plan.json (M, CER, p(c) per cluster; the texts drawn)
      students/                 a folder per milestone: warmup, stage1, <arm>-round-<r>, and
                                active-round-<r>-half (half-way through round r; scores round r+1)
      train/                    Ray Train storage, a folder per job: warmup, stage1, stage2-<arm>
      tracking/<tracker>/<job>/ the experiment tracker's files (train.tracker; none by default)
      eval/                     results.json; baselines.json (the systems needing no trained student);
                                cache/ (the benchmarks' speech and transcripts)
      report/                   report.md and PNG plots
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from salad_ray.config import RunConfig, StagesConfig

# Shard stores every run has, and the Ray Train jobs before stage II.
HELDOUT, NATURAL, TEXT = "heldout", "natural", "text"
WARMUP_JOB, STAGE1_JOB = "warmup", "stage1"
STAGE1_LABEL = "stage I"
EVAL_SPEECH = "eval/speech"  # the phase that speaks and transcribes the benchmarks ahead of the evaluation
EVAL_BASELINES_PHASE = "eval/baselines"  # the phase that scores the systems needing no trained student
POOL, EVAL, REPORT = "pool", "eval", "report"  # the phases of the pool, the evaluation and the report


@dataclass(frozen=True)
class Arm:
    """One branch of stage II: the active loop (the config's gamma) or the uniform baseline (gamma 0).

    Both start from the stage-I student and use the same probes, budget and seed; each has its own
    selections, shard stores, Ray Train job and students.
    """

    name: str
    gamma: float

    @property
    def job(self) -> str:
        """The arm's Ray Train job: its stage II, trained on in one call or more per round."""
        return f"stage2-{self.name}"

    def store(self, r: int) -> str:
        return f"{self.name}-{r}"

    def stores(self, rounds: int) -> list[str]:
        """The arm's round stores of rounds 1 to ``rounds``, in round order."""
        return [self.store(r) for r in range(1, rounds + 1)]

    def phase(self, r: int, part: str) -> str:
        """A phase of the arm's round r in state.json: plan, synthesis or train."""
        return f"{self.name}/round-{r}/{part}"

    def with_gamma(self, gamma: float) -> Arm:
        return replace(self, gamma=gamma)


ACTIVE = Arm("active", 5.0)
UNIFORM = Arm("uniform", 0.0)
ARMS = (ACTIVE, UNIFORM)


def arm_of_job(job: str | None) -> str | None:
    """The arm a Ray Train job belongs to (None: the warm-up and stage I, shared by every arm)."""
    return next((arm.name for arm in ARMS if arm.job == job), None)


def in_arm_order(names) -> list[str]:
    """The arm names among ``names`` (None and other names left out), in the arms' order: active,
    then uniform."""
    present = set(names)
    return [arm.name for arm in ARMS if arm.name in present]


def probes_store(r: int) -> str:
    return f"probes-{r}"


def probes_phase(r: int) -> str:
    return f"round-{r}/probes"


def scores_phase(r: int) -> str:
    return f"round-{r}/scores"


@dataclass(frozen=True)
class Milestone:
    """A student the run saves: its label in summaries and reports, the Ray Train job and step it is
    saved at, its folder under ``students/``, and the phase (in state.json) that saves it."""

    label: str
    job: str
    step: int
    student: str
    phase: str
    arm: str | None = None  # None: shared by every arm
    round: int | None = None  # the stage-II round it ends (or is half-way through)


def warmup(stages: StagesConfig) -> Milestone:
    return Milestone("warm-up", WARMUP_JOB, stages.warmup.steps, "warmup", WARMUP_JOB)


def stage1(stages: StagesConfig) -> Milestone:
    return Milestone(STAGE1_LABEL, STAGE1_JOB, stages.stage1_steps, "stage1", STAGE1_JOB)


def end_of_stage2(arm: Arm | str) -> str:
    """The label of an arm's last student: the row of the paper's table it fills."""
    return f"stage II {arm.name if isinstance(arm, Arm) else arm}"


def round_end(arm: Arm, r: int, stages: StagesConfig) -> Milestone:
    """The arm's student after round r; after the last round it is the arm's end of stage II."""
    label = end_of_stage2(arm) if r == stages.stage2_rounds else f"{arm.name} round {r}"
    step = r * stages.stage2_steps_per_round
    return Milestone(label, arm.job, step, f"{arm.name}-round-{r}", arm.phase(r, "train"), arm.name, r)


def half_way(r: int, stages: StagesConfig) -> Milestone:
    """The active arm's student half-way through round r, at stage-II step (r - 1)·S + ⌈S/2⌉."""
    per_round = stages.stage2_steps_per_round
    step = (r - 1) * per_round + (per_round + 1) // 2
    return Milestone(
        f"{ACTIVE.name} round {r} half",
        ACTIVE.job,
        step,
        f"{ACTIVE.name}-round-{r}-half",
        ACTIVE.phase(r, "half"),
        ACTIVE.name,
        r,
    )


def student_for_round(r: int, stages: StagesConfig) -> Milestone:
    """The student that probes and scores stage-II round r.

    Round 1: the stage-I student. Round r >= 2: the active arm's half-way student of round r - 1
    (:func:`half_way`), which round r - 1's training call saves at step h = (r - 2)·S + ⌈S/2⌉ on
    its way to (r - 1)·S (:func:`round_exports`). For S >= 2, (r - 2)·S < h < (r - 1)·S: the
    student has trained on round r - 1's selection, and round r is scored, selected and synthesized
    while round r - 1 trains its second half. It reads finished work only, so a resumed run scores
    with the same student.
    """
    return stage1(stages) if r == 1 else half_way(r - 1, stages)


def round_exports(arm: Arm, r: int, stages: StagesConfig) -> list[Milestone]:
    """The students an arm's training call of round r saves on its way to the round's end: the
    active arm's half-way student of each round r < R, which scores round r + 1
    (:func:`student_for_round`). One call per round: a second call would start Ray Train's workers,
    the student and its optimizer state again (~25 s on a laptop) and measure the held-out set
    again (~16 s)."""
    if arm.name == ACTIVE.name and r < stages.stage2_rounds:
        return [student_for_round(r + 1, stages)]
    return []


def run_arms(config: RunConfig) -> list[Arm]:
    """The stage-II arms a config runs: active at its gamma, and uniform with ``selection.compare_uniform``."""
    uniform = [UNIFORM] if config.selection.compare_uniform else []
    return [ACTIVE.with_gamma(config.selection.gamma), *uniform] if config.stages.stage2_rounds else []


def final_milestones(config: RunConfig) -> list[Milestone]:
    """The students the evaluation compares, in the order of the paper's table: stage I, then the
    end of stage II of the uniform arm and of the active arm."""
    stages = config.stages
    arms = sorted(run_arms(config), key=lambda a: a.name != UNIFORM.name)
    return [stage1(stages), *[round_end(arm, stages.stage2_rounds, stages) for arm in arms]]


def round_milestones(config: RunConfig) -> list[Milestone]:
    """Each arm's students of the rounds before its last (for the learning curve)."""
    stages = config.stages
    arms = sorted(run_arms(config), key=lambda a: a.name != UNIFORM.name)
    return [round_end(arm, r, stages) for arm in arms for r in range(1, stages.stage2_rounds)]


def milestones(stages: StagesConfig, arms: list[Arm]) -> list[Milestone]:
    """The run's noted milestones in reading order: the warm-up, stage I, then each arm (in name
    order) round by round, its last round being its end of stage II."""
    out = [warmup(stages)] if stages.warmup.steps else []
    out.append(stage1(stages))
    for arm in sorted(arms, key=lambda a: a.name):
        out += [round_end(arm, r, stages) for r in range(1, stages.stage2_rounds + 1)]
    return out


# The files of an evaluation's output folder (a run's eval/, or `python -m salad_ray.eval --out`).
EVAL_RESULTS = "results.json"
EVAL_BASELINES = "baselines.json"  # the original LLM, the cascade and the untrained student, scored early
EVAL_PROGRESS = "progress.txt"  # the system being scored, for the driver's status line
EVAL_CACHE = "cache"  # spoken pieces and transcripts


@dataclass(frozen=True)
class RunDir:
    """The paths of a run directory (module docstring)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def timeline(self) -> Path:
        return self.root / "timeline.jsonl"

    @property
    def tracking(self) -> Path:
        return self.root / "tracking"

    def store(self, name: str) -> Path:
        return self.root / "data" / name

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    def probe_scores(self, r: int) -> Path:
        return self.root / "rounds" / "probes" / str(r) / "scores.parquet"

    def plan(self, arm: Arm | str, r: int) -> Path:
        name = arm.name if isinstance(arm, Arm) else arm
        return self.root / "rounds" / name / str(r) / "plan.json"

    @property
    def students(self) -> Path:
        return self.root / "students"

    def student(self, milestone: Milestone) -> Path:
        return self.students / milestone.student

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def results(self) -> Path:
        return self.eval / EVAL_RESULTS

    @property
    def baselines(self) -> Path:
        return self.eval / EVAL_BASELINES

    @property
    def report(self) -> Path:
        return self.root / "report"
