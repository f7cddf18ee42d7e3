"""The active loop's driver: its phases, declared as a graph (salad_ray.phases) over a run directory.

    heldout, natural, text   spoken held-out set, natural speech, text-only samples (side by side)
    pool                     the candidate pool (minus benchmark texts), embedded, balanced clusters
    warmup, stage1           the adapter alone (LLM frozen), then distillation on natural speech + text
    round-r/probes           a few texts per cluster, spoken (round 1's beside the warm-up and stage I)
    round-r/scores           M(c), KL(c) and CER(c) of the probes, with the round's student
    <arm>/round-r/plan       p(c) ~ P(c) S(c)^gamma, texts drawn to the budget
    <arm>/round-r/synthesis  the drawn texts spoken into the round's store
    <arm>/round-r/train      the arm's stage II trained to the end of round r (one Ray Train call)
    active/round-r/half      the student that call saves half-way through round r: scores round r + 1
    eval/speech              the benchmarks spoken and transcribed (beside the warm-up and stage I)
    eval/baselines           the original LLM, the cascade and the untrained student scored (beside stage I)
    eval, report             spoken benchmarks, controls and held-out gaps; the report

Each phase is recorded in ``state.json`` when done and is safe to redo (pipelines skip committed
samples, training resumes from its checkpoint), and reads finished work only: a run killed anywhere
and resumed selects and synthesizes exactly what an uninterrupted run would. Which student scores
which round is :func:`salad_ray.rundir.student_for_round`'s.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from salad_ray import rounds, rundir
from salad_ray.accounting import PipelineReport
from salad_ray.config import ConfigError, RunConfig
from salad_ray.console import log
from salad_ray.corpus import Rejected, TextRecord, heldout_records, screen_texts
from salad_ray.eval.suite import prepare_speech, run_baselines, run_eval, run_students
from salad_ray.files import copy_dir
from salad_ray.phases import Phase, run_graph, wait_for
from salad_ray.pipeline.shards import ShardStore
from salad_ray.pool import Pool
from salad_ray.resources import phase_asks, run_eval_task
from salad_ray.rundir import (
    ACTIVE,
    EVAL,
    EVAL_BASELINES_PHASE,
    EVAL_SPEECH,
    HELDOUT,
    NATURAL,
    POOL,
    REPORT,
    TEXT,
    Arm,
    Milestone,
    RunDir,
)
from salad_ray.runstate import GapNote, RunState
from salad_ray.selection import RoundPlan
from salad_ray.status import Status


class Driver:
    def __init__(self, config: RunConfig, run: RunDir):
        self.config, self.dirs = config, run
        self.state = RunState(run.state, config.stages.stage2_rounds)
        self.status = Status(config, run, self.state, self.pipelines)
        self._pending: dict[str, tuple[ShardStore, int]] = {}  # store name -> (store, texts submitted)
        self._ended: set[str] = set()  # training phases whose call returned or raised in this process

    def store(self, name: str) -> ShardStore:
        return ShardStore(self.dirs.store(name))

    def _synthesize(
        self, name: str, records: list[TextRecord | Rejected], *, voices: list[str], source: str, **options
    ) -> PipelineReport:
        """Run a text pipeline into store ``name`` (``options``: run_texts's and text_jobs's clusters)."""
        from salad_ray.pipeline.dataflow import run_texts, skipped_jobs, text_jobs

        store, clusters = self.store(name), options.pop("clusters", None)
        jobs = text_jobs(records, self.config, voices=voices, source=source, clusters=clusters)
        self._pending[name] = (store, int((~skipped_jobs(jobs)).sum()))
        try:
            report = run_texts(self.config, jobs, store, name=name, **options)
        finally:
            self._pending.pop(name, None)
        log.info("%s", report.summary())
        return report

    def pipelines(self) -> dict[str, tuple[int, int]]:
        """Each running pipeline's samples written so far and texts submitted."""
        return {name: (len(store.done_ids()), n) for name, (store, n) in list(self._pending.items())}

    # --------------------------------------------------------------------------------------- data

    @functools.cached_property
    def heldout_records(self) -> list[TextRecord]:
        """The held-out texts, read once though three phases need them."""
        return heldout_records(self.config.data, self.config.seed)

    def build_heldout(self) -> None:
        records = self.heldout_records
        report = self._synthesize(HELDOUT, records, voices=self.config.data.heldout.voices, source=HELDOUT)
        self.state.finish(HELDOUT, heldout_ids=[r.text_id for r in records], pipelines={HELDOUT: report})

    def _screened(self, source) -> list[TextRecord | Rejected]:
        """A text source without the held-out texts and held-out-only domains (never trained on)."""
        heldout = {r.text_id for r in self.heldout_records}
        return list(screen_texts(source, exclude_domains=self.config.data.heldout_only, exclude_ids=heldout))

    def build_natural(self) -> None:
        from salad_ray.pipeline.dataflow import run_natural

        data, reports, ids = self.config.data, [], []
        for n, source in enumerate(data.natural):
            reports.append(run_natural(self.config, source, self.store(NATURAL), name=f"natural-{n}"))
            log.info("%s", reports[-1].summary())
        if (standin := data.natural_standin) is not None:
            records = self._screened(standin.text)
            ids = [r.text_id for r in records if isinstance(r, TextRecord)]
            options = {"voices": standin.voices, "check_asr": standin.check_asr}
            reports.append(self._synthesize(NATURAL, records, source=NATURAL, **options))
        if not reports:
            raise ConfigError(
                "no natural speech: set data.natural (recorded corpora) or data.natural_standin"
            )
        self.state.finish(NATURAL, natural_ids=ids, pipelines={r.name: r for r in reports})

    def build_text(self) -> None:
        records = self._screened(self.config.data.text)
        report = self._synthesize(TEXT, records, voices=[], source=TEXT, speech=False)
        self.state.finish(TEXT, pipelines={TEXT: report})

    def build_pool(self) -> None:
        from salad_ray.eval.items import load_items
        from salad_ray.pool import build_pool

        benchmarks = [b for b in self.config.eval.benchmarks if b.kind == "fortune-cloze"]
        exclude = set(self.state.notes.heldout_ids) | set(self.state.notes.natural_ids)
        exclude |= {item.item_id for b in benchmarks for item in load_items(b, self.config.seed)}
        pool = build_pool(self.config, self.dirs.pool, exclude)
        log.info("pool: %d texts in %d balanced clusters", len(pool.texts), pool.clusters)
        self.state.finish(POOL, pool={"texts": len(pool.texts), "clusters": pool.clusters})

    # ----------------------------------------------------------------------------------- training

    def train(self, milestone: Milestone, arm: Arm | None = None) -> None:
        """Train to the milestone's step (the warm-up, stage I or an arm's stage II), save its student
        and record its held-out gap."""
        from salad_ray.train.jobs import metrics_log, milestone_job
        from salad_ray.train.launcher import train_stage

        job, starts = milestone_job(self.config, self.dirs, milestone, arm)
        try:
            result = train_stage(
                self.config, self.dirs.train, job, starts, metrics_log(self.config, self.dirs, job)
            )
        finally:
            self._ended.add(milestone.phase)
        if not (target := self.dirs.student(milestone)).is_dir():
            copy_dir(result.student, target)
        gap = {k: v for k, v in result.metrics.items() if k in GapNote.model_fields}
        self.state.finish(milestone.phase, gap={milestone.label: gap})

    def await_student(self, milestone: Milestone, call: Milestone) -> None:
        """Wait for the student that the training call to ``call`` saves on its way (``milestone``,
        salad_ray.rundir.round_exports), then record its phase done; fail if the call ends without it."""
        wait_for(
            self.dirs.student(milestone),
            lambda: call.phase in self._ended or call.phase in self.state.done,
            f"{call.phase} ended without saving the {milestone.label} student (step {milestone.step})",
        )
        self.state.finish(milestone.phase)

    # ------------------------------------------------------------------------------------- rounds

    def _speak_pool_texts(self, name: str, texts: pd.DataFrame, source: str, **options) -> PipelineReport:
        """Pool rows spoken in the run's voices into store ``name``, each with its cluster."""
        options.update(voices=self.config.tts.voices, source=source, clusters=texts["cluster"])
        return self._synthesize(name, rounds.records(texts), **options)

    def speak_probes(self, r: int) -> None:
        probes = rounds.draw_probes(self.config, self.dirs, self.state.notes, Pool.load(self.dirs.pool), r)
        report = self._speak_pool_texts(rundir.probes_store(r), probes, "probe", max_cer=float("inf"))
        pipelines = {rundir.probes_store(r): report}
        self.state.finish(rundir.probes_phase(r), probes={r: list(probes["text_id"])}, pipelines=pipelines)

    def score_probes(self, r: int) -> None:
        from salad_ray.scoring import score_store

        student = self.dirs.student(rundir.student_for_round(r, self.config.stages))
        scores = score_store(self.config, self.store(rundir.probes_store(r)), student)
        self.dirs.probe_scores(r).parent.mkdir(parents=True, exist_ok=True)
        scores.to_parquet(self.dirs.probe_scores(r))
        self.state.finish(rundir.scores_phase(r))

    def plan(self, arm: Arm, r: int) -> None:
        pool = Pool.load(self.dirs.pool)
        plan = rounds.plan_arm_round(self.config, self.dirs, self.state.notes, pool, arm, r)
        plan.save(self.dirs.plan(arm, r))
        self.state.finish(arm.phase(r, "plan"))

    def synthesize(self, arm: Arm, r: int) -> None:
        chosen = rounds.chosen_texts(Pool.load(self.dirs.pool), RoundPlan.load(self.dirs.plan(arm, r)))
        report = self._speak_pool_texts(arm.store(r), chosen, "active")
        seconds = self.store(arm.store(r)).seconds()
        self.state.finish(
            arm.phase(r, "synthesis"),
            rounds={arm.name: {r: {"seconds": seconds, "texts": len(chosen)}}},
            pipelines={arm.store(r): report},
        )

    # ------------------------------------------------------------------------------------ the end

    def _evaluation(self, phase: str, step, *args) -> None:
        """``step(config, *args)``, a step of the evaluation (salad_ray.eval.suite), in a Ray task with
        the evaluation's resources; then ``phase`` is done."""
        run_eval_task(self.config, step, self.config, *args)
        self.state.finish(phase)

    def report(self) -> None:
        from salad_ray.report import write_report

        write_report(self.config, self.dirs, self.state.notes)
        self.state.finish(REPORT)

    # -------------------------------------------------------------------------------------- graph

    def graph(self) -> list[Phase]:
        """Every phase of the run with what it needs, in an order that respects the needs."""
        c, stages, run, partial = self.config, self.config.stages, self.dirs, functools.partial
        phases: list[Phase] = []

        def add(name: str, work, needs, produces: Path, kind: str = "", lane: str = "", **kw) -> None:
            asks = phase_asks(c, kind) if kind else ""
            where = str(produces.relative_to(run.root))
            phases.append(
                Phase(name, work, tuple(needs), where, asks, lane=lane, training=kind == "train", **kw)
            )

        def train(milestone: Milestone, needs, arm: Arm | None = None) -> None:
            lane = f"{arm.name} arm" if arm else "warm-up, stage I"
            work = partial(self.train, milestone, arm)
            add(milestone.phase, work, needs, run.student(milestone), "train", lane)

        add(HELDOUT, self.build_heldout, [], run.store(HELDOUT), "speech", "data")
        add(NATURAL, self.build_natural, [], run.store(NATURAL), "speech", "data")
        add(TEXT, self.build_text, [], run.store(TEXT), "text", "data")
        add(POOL, self.build_pool, [HELDOUT, NATURAL, TEXT], run.pool, "embed", "data")  # then the trainers
        first = rundir.stage1(stages)
        if stages.warmup.steps:
            train(rundir.warmup(stages), [POOL])
        train(first, [rundir.warmup(stages).phase if stages.warmup.steps else POOL])
        arms, last = rundir.run_arms(c), stages.stage2_rounds
        for r in range(1, last + 1):
            avoid = [ACTIVE.phase(r - 1, "plan")] if r > 1 else []  # probes avoid the active selections
            probes, scores, lane = rundir.probes_phase(r), rundir.scores_phase(r), "probes, scores"
            speak, score = partial(self.speak_probes, r), partial(self.score_probes, r)
            add(probes, speak, [POOL, *avoid], run.store(rundir.probes_store(r)), "speech", lane)
            scorer = rundir.student_for_round(r, stages).phase
            add(scores, score, [probes, scorer], run.probe_scores(r), "score", lane)
            for arm in arms:
                plan, synthesis = arm.phase(r, "plan"), arm.phase(r, "synthesis")
                earlier = [arm.phase(r - 1, "plan")] if r > 1 else []
                lane = f"{arm.name} arm"
                add(plan, partial(self.plan, arm, r), [scores, *earlier], run.plan(arm, r), lane=lane)
                one_at_a_time = [arm.phase(r - 1, "synthesis")] if r > 1 else []  # an arm's rounds in turn
                work = partial(self.synthesize, arm, r)
                add(synthesis, work, [plan, *one_at_a_time], run.store(arm.store(r)), "speech", lane)
                previous = first.phase if r == 1 else arm.phase(r - 1, "train")
                end = rundir.round_end(arm, r, stages)
                train(end, [synthesis, previous], arm)
                for export in rundir.round_exports(arm, r, stages):  # saved by that call on its way
                    work = partial(self.await_student, export, end)
                    add(export.phase, work, [synthesis, previous], run.student(export))  # drawn: the call
        trained = [first.phase, *[arm.phase(last, "train") for arm in arms]]
        if c.eval.enabled:  # speech and the systems needing no trained student: beside the trainers
            evaluation, held, lane = self._evaluation, run.store(HELDOUT), "eval, report"
            work = partial(evaluation, EVAL_SPEECH, prepare_speech, run.eval)
            add(EVAL_SPEECH, work, [POOL], run.eval, "eval", lane)
            before_stage1 = rundir.warmup(stages).phase if stages.warmup.steps else POOL  # beside stage I
            work = partial(evaluation, EVAL_BASELINES_PHASE, run_baselines, held, run.eval)
            add(EVAL_BASELINES_PHASE, work, [EVAL_SPEECH, before_stage1], run.baselines, "eval", lane)
            work = partial(evaluation, EVAL, run_eval, run_students(c, run), held, run.eval)
            add(EVAL, work, [*trained, EVAL_BASELINES_PHASE], run.results, "eval", lane)
        after = [EVAL] if c.eval.enabled else trained
        add(REPORT, self.report, after, run.report, lane="eval, report", always=True)
        return phases

    def run(self) -> None:
        """Every phase not done yet (the data pipelines share one teacher, deployed first)."""
        from salad_ray.pipeline.dataflow import ensure_teacher

        if any(p not in self.state.done for p in (HELDOUT, NATURAL, TEXT)):
            ensure_teacher(self.config)
        with self.status:
            run_graph(
                self.graph(),
                lambda name: name in self.state.done,
                self.status.started,
                self.status.ended,
                self.status.tick,
            )
