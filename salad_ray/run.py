"""``python -m salad_ray.run``: the active loop, as a resumable state machine over a run directory.

    python -m salad_ray.run [--preset local] [--config FILE] [--set key=value ...]
                            [--run-dir DIR] [--resume] [--address ADDR]

It joins a running Ray cluster if there is one (``ray job submit --working-dir . --
python -m salad_ray.run`` works) and starts a local one otherwise. Phases, each recorded in
``state.json`` when done and each safe to redo (pipelines skip committed samples, training resumes
from its checkpoint):

    heldout        broad-domain held-out texts, spoken (F and M are measured on them)
    natural        natural speech (recorded corpora, or the synthetic stand-in of the local preset)
    text           text-only samples
    pool           the candidate pool (minus benchmark texts), embedded, cut into balanced clusters
    stage1         distillation on natural speech + text
    round-r/probes a few texts per cluster, spoken;   round-r/scores: M(c) and CER(c) with a student
    <arm>/round-r  plan: p(c) ~ P(c) M(c)^gamma, texts drawn to the budget;  synthesis;  train
    eval           spoken benchmarks (text / speech / cascade) and held-out F, M per domain
    report         Markdown and plots

The arms of stage II are ``active`` (the config's gamma) and, with ``selection.compare_uniform``,
``uniform`` (gamma = 0, the paper's comparison: same stage-I student, probes, budget and seed);
they run side by side. An arm is pipelined: while the trainer trains on round r, round r+1 is
probed, scored, selected and synthesized, so the trainer does not wait for data and the TTS actors
do not sit idle. Round 1's probes are spoken while the warm-up and stage I train, and scored with
the stage-I student; the active arm trains each round r
but the last in two calls, saving a half-way student after the first, and round r+1 is scored
with it (``student_for_round``): round r+1's probes are spoken while round r trains its first half,
then scored, selected and synthesized while it trains its second half. Every decision reads
finished work only, so a run killed anywhere and resumed synthesizes exactly the samples an
uninterrupted run would. Each round's store joins the training stream at the round's first step
(salad_ray.train.mixture): the steps of round r read round r's selection first.

The run directory's layout, and every name in it, is :mod:`salad_ray.rundir`'s.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from math import nan
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from salad_ray import preflight
from salad_ray.accounting import PipelineReport
from salad_ray.config import ConfigError, RunConfig, add_config_arguments, load_config
from salad_ray.corpus import Rejected, TextRecord, heldout_records, screen_texts
from salad_ray.files import write_text
from salad_ray.preflight import PreflightFailed
from salad_ray.resources import ClusterTooSmall
from salad_ray.rundir import (
    ACTIVE,
    HELDOUT,
    NATURAL,
    STAGE1_JOB,
    TEXT,
    WARMUP_JOB,
    Arm,
    Milestone,
    RunDir,
    final_milestones,
    probes_phase,
    probes_store,
    round_calls,
    run_arms,
    scores_phase,
    stage1,
    student_for_round,
    warmup,
)
from salad_ray.runstate import RunState, StateError

if TYPE_CHECKING:
    from salad_ray.train.loop import StageJob


def _records(frame: pd.DataFrame) -> list[TextRecord]:
    return [TextRecord(t.text_id, t.text, t.domain) for t in frame.itertuples()]


class Status:
    """A one-line status of the loop from a background thread: looked at every ``every`` seconds,
    printed when it changed, or after ``quiet`` seconds without a change.

    Work that runs side by side (the data pipelines, the arms of stage II) shows in lanes of its own.
    """

    def __init__(self, driver: Driver, every: float = 20.0, quiet: float = 120.0):
        self.driver, self.every, self.quiet = driver, every, quiet
        self.lanes: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Status:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def show(self, lane: str, text: str) -> None:
        self.lanes[lane] = text

    def clear(self, lane: str) -> None:
        self.lanes.pop(lane, None)

    def trainer(self) -> str:
        """The step of every training stage still under way (else of the last one to log)."""
        stages, metrics = self.driver.config.stages, self.driver.dirs.metrics
        last: dict[str, int] = {}
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                record = json.loads(line)
                last[record["stage"]] = record["step"]
        if not last:
            return "-"

        def total(stage: str) -> int:
            if stage == WARMUP_JOB:
                return stages.warmup.steps
            if stage == STAGE1_JOB:
                return stages.stage1_steps
            return stages.stage2_rounds * stages.stage2_steps_per_round

        running = [stage for stage, step in last.items() if step < total(stage)] or [list(last)[-1]]
        return ", ".join(f"{stage} {last[stage]}/{total(stage)}" for stage in running)

    def line(self) -> str:
        from salad_ray.eval.suite import PROGRESS_FILE

        d = self.driver
        lanes = dict(self.lanes)
        progress = d.dirs.eval / PROGRESS_FILE
        if "eval" in lanes and progress.is_file():
            lanes["eval"] = f"eval: {progress.read_text().strip()}"
        work = "; ".join(lanes.values()) or "starting"
        return (
            f"[salad-ray] {work} | trainer {self.trainer()} | synthesis queue {d.queue_depth()} texts"
            f" | budget used {d.budget_used()}"
        )

    def _run(self) -> None:
        last, printed = "", 0.0
        while not self._stop.wait(self.every):
            line = self.line()
            if line != last or time.time() - printed >= self.quiet:
                print(line, flush=True)
                last, printed = line, time.time()


class Driver:
    def __init__(self, config: RunConfig, run_dir: Path):
        self.config = config
        self.run_dir = run_dir
        self.dirs = RunDir(run_dir)
        self.state = RunState(self.dirs.state)
        self.status = Status(self)
        self._probing = threading.Lock()  # one arm probes a round, the other finds it done
        self._failed = threading.Event()  # set when an arm or a trainer fails: waits stop
        self._pending: dict[str, tuple[Any, int]] = {}  # store name -> (store, texts submitted)

    # ----------------------------------------------------------------------------------- helpers

    def store(self, name: str):
        from salad_ray.pipeline.shards import ShardStore

        return ShardStore(self.dirs.store(name))

    def _synthesize(
        self,
        name: str,
        records: list[TextRecord | Rejected],
        *,
        voices: list[str],
        source: str,
        clusters=None,
        speech: bool = True,
        max_cer: float | None = None,
        check_asr: bool = True,
    ) -> PipelineReport:
        """Run a text pipeline into store ``name``; its report, for the run state's ``pipelines`` notes."""
        from salad_ray.pipeline.dataflow import run_texts, skipped_jobs, text_jobs

        store = self.store(name)
        jobs = text_jobs(records, self.config, voices=voices, source=source, clusters=clusters)
        self._pending[name] = (store, int((~skipped_jobs(jobs)).sum()))
        try:
            report = run_texts(
                self.config, jobs, store, name=name, speech=speech, max_cer=max_cer, check_asr=check_asr
            )
        finally:
            self._pending.pop(name, None)
        print(report.summary(), flush=True)
        return report

    def queue_depth(self) -> int:
        return sum(max(n - len(store.done_ids()), 0) for store, n in list(self._pending.values()))

    def budget_used(self) -> str:
        """Synthetic seconds made so far against the budget of the rounds planned so far."""
        rounds = [r for arm in self.state.notes.rounds.values() for r in arm.values()]
        if not rounds:
            return "-"
        used = sum(r.seconds for r in rounds)
        return f"{used:.0f}/{self.config.selection.round_budget_seconds * len(rounds):.0f} s"

    def phase(self, name: str, fn) -> None:
        if name in self.state.done:
            return
        self.status.show(name, name)
        print(f"[salad-ray] phase {name}", flush=True)
        t0 = time.time()
        fn()
        self.status.clear(name)
        print(f"[salad-ray] phase {name} done in {time.time() - t0:.0f} s", flush=True)

    # ------------------------------------------------------------------------------------ phases

    @functools.cached_property
    def heldout_records(self) -> list[TextRecord]:
        """The held-out texts: spread across domains (and the held-out-only ones), from the config;
        read once, though the held-out, natural and text phases each need them."""
        return heldout_records(self.config.data, self.config.seed)

    def build_heldout(self) -> None:
        h = self.config.data.heldout
        records = self.heldout_records
        report = self._synthesize("heldout", records, voices=h.voices, source="heldout")
        self.state.finish("heldout", heldout_ids=[r.text_id for r in records], pipelines={"heldout": report})

    def build_natural(self) -> None:
        from salad_ray.pipeline.dataflow import run_natural

        data = self.config.data
        reports, ids = [], []
        for n, source in enumerate(data.natural):
            report = run_natural(self.config, source, self.store("natural"), name=f"natural-{n}")
            print(report.summary(), flush=True)
            reports.append(report)
        if data.natural_standin is not None:
            heldout = {r.text_id for r in self.heldout_records}  # never train on held-out texts
            records = list(
                screen_texts(
                    data.natural_standin.text, exclude_domains=data.heldout_only, exclude_ids=heldout
                )
            )
            ids = [r.text_id for r in records if isinstance(r, TextRecord)]
            reports.append(
                self._synthesize(
                    "natural",
                    records,
                    voices=data.natural_standin.voices,
                    source="natural",
                    check_asr=data.natural_standin.check_asr,
                )
            )
        if not reports:
            raise ConfigError(
                "no natural speech: set data.natural (recorded corpora) or data.natural_standin"
            )
        self.state.finish("natural", natural_ids=ids, pipelines={r.name: r for r in reports})

    def build_text(self) -> None:
        data, heldout = self.config.data, {r.text_id for r in self.heldout_records}
        # never distil a held-out text (text, pool and held-out may share a corpus, as FineWeb-Edu)
        records = list(screen_texts(data.text, exclude_domains=data.heldout_only, exclude_ids=heldout))
        report = self._synthesize("text", records, voices=[], source="text", speech=False)
        self.state.finish("text", pipelines={"text": report})

    def build_data(self) -> None:
        """The held-out, natural and text stores: independent pipelines, run side by side."""
        from salad_ray.pipeline.dataflow import ensure_teacher

        phases = [
            (name, fn)
            for name, fn in (
                ("heldout", self.build_heldout),
                ("natural", self.build_natural),
                ("text", self.build_text),
            )
            if name not in self.state.done
        ]
        if not phases:
            return
        ensure_teacher(self.config)  # once, before the pipelines that share it
        with ThreadPoolExecutor(max_workers=len(phases)) as pool:
            for future in [pool.submit(self.phase, name, fn) for name, fn in phases]:
                future.result()

    def benchmark_text_ids(self) -> set[str]:
        """Texts of the offline benchmarks (fortune cloze items are fortunes): never trained on, whether
        the run evaluates now or ``python -m salad_ray.eval`` does later."""
        from salad_ray.eval.items import load_items

        specs = [b for b in self.config.eval.benchmarks if b.kind == "fortune-cloze"]
        return {item.item_id for spec in specs for item in load_items(spec, self.config.seed)}

    def build_pool(self) -> None:
        from salad_ray.pool import build_pool

        exclude = set(self.state.notes.heldout_ids) | set(self.state.notes.natural_ids)
        exclude |= self.benchmark_text_ids()
        pool = build_pool(self.config, self.dirs.pool, exclude)
        print(f"pool: {len(pool.texts)} texts in {pool.clusters} balanced clusters", flush=True)
        self.state.finish("pool", pool={"texts": len(pool.texts), "clusters": pool.clusters})

    def stage_job(self, until: int, arm: Arm | None = None) -> tuple[StageJob, dict[str, list[int]]]:
        """The training job up to step ``until`` of stage I, or of an arm's stage II, and the step from
        which each store of a source is read: in stage II, round r's store (r = 1 .. ⌈until/S⌉)
        from its first step, (r - 1)·S."""
        from salad_ray.train.loop import StageJob

        run, stages = self.dirs, self.config.stages
        stores = {"natural": [str(run.store(NATURAL))], "text": [str(run.store(TEXT))]}
        common = {"heldout": str(run.store(HELDOUT)), "metrics_file": str(run.metrics)}
        if arm is None:
            job = StageJob(
                name=stage1(stages).job,
                stores=stores,
                weights=stages.stage1_mix,
                total_steps=stages.stage1_steps,
                until_step=until,
                init=str(run.student(warmup(stages))) if stages.warmup.steps else None,
                **common,
            )
            return job, {}
        per_round = stages.stage2_steps_per_round
        rounds = -(-until // per_round)
        stores["active"] = [str(run.store(arm.store(r))) for r in range(1, rounds + 1)]
        job = StageJob(
            name=arm.job,
            stores=stores,
            weights=stages.stage2_mix,
            total_steps=stages.stage2_rounds * stages.stage2_steps_per_round,
            until_step=until,
            init=str(run.student(stage1(stages))),
            lr_llm=stages.stage2_lr_llm,
            **common,
        )
        return job, {"active": [(r - 1) * per_round for r in range(1, rounds + 1)]}

    def warmup_job(self) -> StageJob:
        """The adapter-only warm-up on natural speech (``stages.warmup``; the LLM frozen)."""
        from salad_ray.train.loop import StageJob

        run, stages = self.dirs, self.config.stages
        return StageJob(
            name=warmup(stages).job,
            stores={"natural": [str(run.store(NATURAL))]},
            weights=stages.warmup.mix,
            total_steps=stages.warmup.steps,
            until_step=stages.warmup.steps,
            objective="alignment",
            lr_adapter=stages.warmup.lr,
            batch_size=stages.warmup.batch_size,
            heldout=str(run.store(HELDOUT)),
            metrics_file=str(run.metrics),
        )

    def _train(self, milestone: Milestone, arm: Arm | None = None, job: StageJob | None = None) -> dict:
        """Train stage I (or ``job``, or an arm's stage II) up to the milestone's step and save its student."""
        from salad_ray.train.launcher import train_stage

        job, starts = (job, {}) if job is not None else self.stage_job(milestone.step, arm)
        result = train_stage(self.config, self.dirs.train, job, starts)
        target = self.dirs.student(milestone)
        if not target.is_dir():
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(result.student, tmp)
            tmp.replace(target)
        return {k: v for k, v in result.metrics.items() if k in ("step", "heldout_f", "heldout_m", "loss")}

    def train_warmup(self) -> None:
        milestone = warmup(self.config.stages)
        gap = self._train(milestone, job=self.warmup_job())
        self.state.finish("warmup", gap={milestone.label: gap})

    def train_stage1(self) -> None:
        milestone = stage1(self.config.stages)
        gap = self._train(milestone)
        self.state.finish("stage1", gap={milestone.label: gap})

    # ----------------------------------------------------------------------------------- rounds

    def used_text_ids(self, arm: Arm, before_round: int) -> set[str]:
        """Texts an arm may not draw in a round: every probe so far and the arm's earlier selections."""
        used: set[str] = set()
        for r in range(1, before_round + 1):
            used |= set(self.state.notes.probes.get(r, []))
        for r in range(1, before_round):
            plan = self.dirs.plan(arm, r)
            if plan.is_file():
                used |= {c["text_id"] for c in json.loads(plan.read_text())["selected"]}
        return used

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Wait until ``ready()``: what a round needs of the active arm (its selections, its students)
        may still be under way, in its trainer or, for the uniform arm, in the active arm's thread."""
        while not ready():
            if self._failed.is_set():
                raise RuntimeError(f"{what}: a stage-II arm or its trainer failed before it")
            time.sleep(1)

    def _stop_waits_if_failed(self, training: Future) -> None:
        if training.exception() is not None:
            self._failed.set()

    def probe_round(self, r: int, lane: str) -> None:
        """A few texts per cluster, spoken once the active selections before round r (which probes
        avoid) are made, then scored with the round's student (:func:`student_for_round`) once it is
        saved: M(c), CER(c). Shared by the arms: whichever gets to round r first probes it, the other
        finds it done."""
        planned = ACTIVE.phase(r - 1, "plan")
        self.wait_for(lambda: r == 1 or planned in self.state.done, f"round {r} cannot be probed")
        with self._probing:
            self._speak_probes(r, lane)
        student = self.dirs.student(student_for_round(r, self.config.stages))
        self.wait_for(student.is_dir, f"round {r} cannot be scored")
        with self._probing:
            self._score_probes(r, student, lane)

    def _speak_probes(self, r: int, lane: str) -> None:
        from salad_ray.pool import Pool

        if probes_phase(r) not in self.state.done:
            pool = Pool.load(self.dirs.pool)
            free = pool.texts[~pool.texts["text_id"].isin(self.used_text_ids(ACTIVE, r))]
            rng = np.random.default_rng([self.config.seed, r])
            per_cluster = self.config.selection.probes_per_cluster
            probes = pd.concat(
                [g.iloc[rng.permutation(len(g))[:per_cluster]] for _, g in free.groupby("cluster")]
            )
            self.status.show(lane, f"round {r}: probe")
            report = self._synthesize(
                probes_store(r),
                _records(probes),
                voices=self.config.tts.voices,
                source="probe",
                clusters=probes["cluster"],
                max_cer=float("inf"),
            )
            self.state.finish(
                probes_phase(r),
                probes={r: list(probes["text_id"])},
                pipelines={probes_store(r): report},
            )

    def _score_probes(self, r: int, student: Path, lane: str) -> None:
        from salad_ray.scoring import score_store

        if scores_phase(r) not in self.state.done:
            self.status.show(lane, f"round {r}: score")
            scores = score_store(self.config, self.store(probes_store(r)), student)
            path = self.dirs.probe_scores(r)
            path.parent.mkdir(parents=True, exist_ok=True)
            scores.to_parquet(path)
            self.state.finish(scores_phase(r))

    def prepare_round(self, arm: Arm, r: int) -> None:
        """Probe and score (shared by the arms), select by the arm's gamma, synthesize round r."""
        from salad_ray.pool import Pool
        from salad_ray.scoring import per_cluster
        from salad_ray.selection import Candidate, plan_round

        self.probe_round(r, lane=arm.name)
        sel, plan_file = self.config.selection, self.dirs.plan(arm, r)
        if arm.phase(r, "plan") not in self.state.done:
            pool = Pool.load(self.dirs.pool)
            scores = pd.read_parquet(self.dirs.probe_scores(r))
            m, cer, kl = per_cluster(scores, pool.clusters)
            seconds_per_word = scores["duration"].sum() / max(scores["words"].sum(), 1)
            used = self.used_text_ids(arm, r)
            candidates = [
                Candidate(t.text_id, int(t.cluster), float(t.words * seconds_per_word))
                for t in pool.texts.itertuples()
                if t.text_id not in used
            ]
            plan = plan_round(
                r,
                m,
                cer,
                pool.share(),
                candidates,
                gamma=arm.gamma,
                max_cer=sel.max_cer,
                budget_seconds=sel.round_budget_seconds,
                seed=self.config.seed * 1000 + r,
                kl=kl,
                signal=sel.signal,
            )
            plan_file.parent.mkdir(parents=True, exist_ok=True)
            write_text(plan_file, json.dumps(plan.to_dict(), indent=2))
            self.state.finish(arm.phase(r, "plan"))
        if arm.phase(r, "synthesis") not in self.state.done:
            pool = Pool.load(self.dirs.pool)
            plan = json.loads(plan_file.read_text())
            chosen = (
                pool.texts.set_index("text_id").loc[[c["text_id"] for c in plan["selected"]]].reset_index()
            )
            self.status.show(arm.name, f"{arm.name} round {r}: synthesize")
            report = self._synthesize(
                arm.store(r),
                _records(chosen),
                voices=self.config.tts.voices,
                source="active",
                clusters=chosen["cluster"],
            )
            seconds = float(
                self.store(arm.store(r)).table(columns=["duration"]).column("duration").to_numpy().sum()
            )
            self.state.finish(
                arm.phase(r, "synthesis"),
                rounds={arm.name: {r: {"seconds": seconds, "texts": len(chosen)}}},
                pipelines={arm.store(r): report},
            )

    def train_round(self, arm: Arm, r: int) -> None:
        """Round r's steps, in the calls of :func:`round_calls`; the last one's F and M are noted."""
        for milestone in round_calls(arm, r, self.config.stages):
            gap = self._train(milestone, arm)
        self.state.finish(arm.phase(r, "train"), gap={milestone.label: gap})

    def stage2(self, arm: Arm) -> None:
        """The arm's rounds, pipelined: round r trains while round r + 1 is prepared (the active arm's
        preparation waits in ``probe_round`` for the half-way student its own trainer saves)."""
        rounds = self.config.stages.stage2_rounds
        self.prepare_round(arm, 1)
        with ThreadPoolExecutor(max_workers=1) as trainer:
            for r in range(1, rounds + 1):
                training = None
                if arm.phase(r, "train") not in self.state.done:
                    self.status.show(arm.name, f"{arm.name} round {r}: train")
                    training = trainer.submit(self.train_round, arm, r)
                    training.add_done_callback(self._stop_waits_if_failed)
                try:
                    if r < rounds:
                        self.prepare_round(arm, r + 1)  # overlaps the training of round r
                finally:
                    if training is not None:
                        training.result()  # a failed training raises here, not the wait it stopped
        self.status.clear(arm.name)

    def run_arms(self) -> None:
        """Stage II: the arms side by side (the uniform arm needs only the probes' scores, which the
        active arm's students produce; it waits for them where it gets ahead)."""
        if self.config.stages.stage2_rounds == 0:
            return
        arms = run_arms(self.config)

        def arm_thread(arm: Arm) -> None:
            try:
                self.stage2(arm)
            except BaseException:
                self._failed.set()  # an arm waiting on this one's students stops too
                raise

        with ThreadPoolExecutor(max_workers=len(arms), thread_name_prefix="arm") as pool:
            for future in [pool.submit(arm_thread, arm) for arm in arms]:
                future.result()

    def train_before_stage2(self) -> None:
        """The warm-up and stage I, with round 1's probes spoken beside them: they need only the pool
        (no student scores them until stage I is saved), so the trainer's time hides their pipeline."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="probes") as probes:
            speaking = (
                probes.submit(self._speak_probes, 1, "probes") if self.config.stages.stage2_rounds else None
            )
            try:
                if self.config.stages.warmup.steps:
                    self.phase("warmup", self.train_warmup)
                self.phase("stage1", self.train_stage1)
            finally:
                if speaking is not None:
                    speaking.result()
        self.status.clear("probes")

    def evaluate(self) -> None:
        """The spoken benchmarks, the controls and the held-out gap of every student, in a Ray task."""
        import ray

        from salad_ray.eval.suite import run_eval, run_students
        from salad_ray.resources import eval_task_options

        task = ray.remote(run_eval).options(**eval_task_options(self.config))
        students = run_students(self.config, self.dirs)
        ray.get(task.remote(self.config, students, self.dirs.store(HELDOUT), self.dirs.eval))
        self.state.finish("eval")

    # -------------------------------------------------------------------------------------- run

    def run(self) -> Path:
        from salad_ray.report import write_report

        with self.status:
            self.build_data()
            self.phase("pool", self.build_pool)
            self.train_before_stage2()
            self.run_arms()
            if self.config.eval.enabled:
                self.phase("eval", self.evaluate)
            self.status.show("report", "report")
            report = write_report(self.config, self.dirs, self.state.notes)
            self.state.finish("report")
        return report

    def summary(self) -> str:
        from salad_ray.report import ordered_gaps

        notes = self.state.notes
        lines = [f"run {self.run_dir} ({self.config.preset}): {', '.join(self.state.done)}"]
        gaps = ordered_gaps(self.config, notes.gap)
        width = max((len(stage) for stage, _ in gaps), default=0)
        for stage, gap in gaps:
            f, m = (nan if v is None else v for v in (gap.heldout_f, gap.heldout_m))
            lines.append(f"  after {stage:{width}s}  held-out F = {f:.4f}  M = {m:.4f}")
        for arm, rounds in sorted(notes.rounds.items()):
            for r, info in sorted(rounds.items()):
                lines.append(f"  {arm} round {r}: {info.texts} texts, {info.seconds:.0f} s synthesized")
        for report in notes.pipelines.values():  # every record read: written, quarantined, skipped
            lines.append(f"  data {report.summary()}")
        lines.append(f"  report: {self.dirs.report / 'report.md'}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- cli


def connect(config: RunConfig, address: str | None = None) -> None:
    """Join a Ray cluster, or start a local instance; then check the cluster can run the whole loop.

    ``address`` (or ``$RAY_ADDRESS``, which ``ray job submit`` sets for its entrypoint) names the
    cluster; without one, a cluster running on this machine (``ray start``) is joined if there is
    one, else a local instance is started. ``local`` always starts a local instance. First, Ray's
    address file is removed if it names a cluster that is gone (:mod:`salad_ray.local_cluster`), so
    neither this driver nor Ray's CLI after it retries a dead address.
    """
    import ray

    from salad_ray.local_cluster import forget_dead_cluster, running_cluster
    from salad_ray.resources import check_cluster, local_cpus

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if (dead := forget_dead_cluster()) is not None:
        print(f"[salad-ray] forgot the address of a Ray cluster that is gone ({dead})", flush=True)
    address = address or os.environ.get("RAY_ADDRESS") or running_cluster() or "local"
    if not ray.is_initialized():
        if address == "local":
            cpus = local_cpus(config)
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            print(f"[salad-ray] started a local Ray instance ({cpus} logical CPUs)", flush=True)
        else:
            ray.init(address=address, log_to_driver=False)
            print(f"[salad-ray] connected to the Ray cluster at {ray.get_runtime_context().gcs_address}")
    check_cluster(config, ray.cluster_resources().get("CPU", 0))
    if address == "local" and (problems := preflight.resource_problems(config, ray.cluster_resources())):
        raise PreflightFailed(problems)  # a joined cluster may autoscale: check its layout (--check --layout)


def check_only(args: argparse.Namespace) -> int:
    """``--check``: the pre-flight alone (salad_ray.preflight), starting and writing nothing. The
    resources are checked against ``--layout`` when given, else against the local instance the run
    would start; a cluster it would join gets the CPU check only (it may autoscale: check its layout)."""
    import ray
    import torch

    from salad_ray.local_cluster import running_cluster
    from salad_ray.resources import check_cluster, local_cpus

    config = load_config(args.preset, args.config, args.overrides)
    if args.layout:
        preflight.check(config, layout=Path(args.layout))
    else:
        address = args.address or os.environ.get("RAY_ADDRESS") or running_cluster() or "local"
        if address == "local":
            cluster = {"CPU": float(local_cpus(config)), "GPU": float(torch.cuda.device_count())}
            check_cluster(config, cluster["CPU"])
            preflight.check(config, cluster=cluster)
        else:
            if not ray.is_initialized():
                ray.init(address=address, log_to_driver=False)
            check_cluster(config, ray.cluster_resources().get("CPU", 0))
            preflight.check(config)
    print(f"pre-flight: ok ({config.preset}): data sources, models, mixtures and resources", flush=True)
    return 0


def resolve_config(args: argparse.Namespace, run_dir: Path) -> RunConfig:
    saved = run_dir / "config.yaml"
    given = args.preset or args.config or args.overrides
    if saved.is_file():
        if not args.resume:
            raise ConfigError(
                f"{run_dir} holds a run already: pass --resume to continue it, or choose another --run-dir"
            )
        config = load_config(file=saved)
        if given and load_config(args.preset or config.preset, args.config, args.overrides) != config:
            raise ConfigError(
                f"{run_dir} was started with another configuration ({saved}); start a new --run-dir to change it"
            )
        preflight.check(config)
        return config
    config = load_config(args.preset, args.config, args.overrides)
    preflight.check(config)  # before the run directory exists: a rejected config leaves nothing behind
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(config.to_yaml())
    return config


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
    run_dir = Path(args.run_dir or Path("runs") / (args.preset or "local")).resolve()
    try:
        config = resolve_config(args, run_dir)
    except (ConfigError, PreflightFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[salad-ray] run {run_dir} (preset {config.preset})", flush=True)
    try:
        driver = Driver(config, run_dir)
        connect(config, args.address)
    except (StateError, ClusterTooSmall, PreflightFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    driver.run()
    print(f"\n{driver.summary()}\n  wall time: {time.time() - t0:.0f} s", flush=True)
    from salad_ray.serve import serve_command

    final = driver.dirs.student(final_milestones(config)[-1])  # the active arm's last round, else stage I
    print(f"  talk to it: {serve_command(final, driver.dirs.config)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
