"""Pre-flight: what a run needs, checked before any work starts (``python -m salad_ray.run --check``).

A run on a GPU cluster that finds a missing source after hours of synthesis has wasted the hours.
Each check below reads only a record, a model's configuration or a resource count, and each
problem names the config key at fault and what to set:

* **data**: every text source (``data.text``, ``data.pool``, ``data.heldout.text``,
  ``data.natural_standin.text``) and every recorded-speech source (``data.natural[i]``) can be read
  and yields at least one record; a speech source has its audio, text and alignment fields;
* **models**: ``models.llm``, ``models.encoder.model``, ``models.asr``, ``models.embedder`` and, for
  Kokoro, ``tts.kokoro_model`` resolve to a configuration (``config.json``); from the hub only that
  file is fetched; randomly initialised models are built from their family and are not checked;
* **mixtures**: every source a stage's mixture draws from has data (``natural``: ``data.natural``
  or ``data.natural_standin``; ``active``: stage II rounds; none in stage I);
* **pool**: ``data.pool`` is set: left out, the candidates would silently be Debian's fortunes;
* **tracker**: the package of the experiment tracker ``train.tracker`` names is installed;
* **resources**: a local instance offers every custom resource the run asks for
  (``resources.tts.resources``) and a GPU wherever one is asked for (``resources.use_gpu``,
  ``resources.<pool>.gpus``, ``resources.gpus_per_*``); CPU counts are :func:`salad_ray.resources.check_cluster`'s. A cluster
  that may autoscale is checked by its layout file (:func:`salad_ray.capacity.check_files`), not by
  the nodes that happen to be up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from salad_ray.config import ModelRef, RunConfig, SpeechSource, TextSource, TTSBackendKind


@dataclass(frozen=True)
class Problem:
    """One thing a run cannot start without: the key at fault and what is wrong and what to set."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class PreflightFailed(RuntimeError):
    """The configuration cannot run; ``problems`` says why, key by key."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))


# ------------------------------------------------------------------------------------------ data


def text_sources(config: RunConfig) -> Iterator[tuple[str, TextSource]]:
    """Every text source of a run, by its key."""
    data = config.data
    yield "data.text", data.text
    yield "data.pool", data.pool
    yield "data.heldout.text", data.heldout.text
    if data.natural_standin is not None:
        yield "data.natural_standin.text", data.natural_standin.text


def _first_text(key: str, source: TextSource) -> Problem | None:
    from salad_ray.corpus import read_texts

    try:
        next(read_texts(source))
    except StopIteration:
        return Problem(key, f"the {source.kind} source yields no text within its bounds ({_bounds(source)})")
    except Exception as e:  # a missing file, an unreachable hub, a bad field: each source raises its own
        return Problem(key, f"the {source.kind} source cannot be read ({_first_line(e)}); {_where(source)}")
    return None


def _bounds(source: TextSource) -> str:
    return f"min_words {source.min_words}, max_words {source.max_words}, categories {source.categories}"


def _where(source: TextSource | SpeechSource) -> str:
    if source.kind == "hf":
        return (
            "set path to a hub dataset id this machine can reach (a gated one needs HF_TOKEN), to a "
            "local save_to_disk directory, or to a builder (parquet, json, webdataset) with data_files"
        )
    if source.kind == "fortunes":
        return "install Debian's fortunes packages (make setup) or name existing categories"
    return "set path to an existing file or directory"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _first_speech_record(source: SpeechSource) -> dict | None:
    """The first record of a recorded-speech source (its audio left encoded), or None when it has none."""
    if source.kind == "parquet":
        import pyarrow.dataset as pads

        rows = pads.dataset(source.path, format="parquet").head(1).to_pylist()
        return rows[0] if rows else None
    from salad_ray.hfdata import open_dataset

    return next(iter(open_dataset(source, audio_fields=(source.audio_field,))), None)


def _first_speech(key: str, source: SpeechSource) -> list[Problem]:
    from salad_ray.hfdata import has_field

    try:
        first = _first_speech_record(source)
    except Exception as e:
        return [
            Problem(
                key, f"the {source.kind} speech source cannot be read ({_first_line(e)}); {_where(source)}"
            )
        ]
    if first is None:
        return [Problem(key, f"the speech source at {source.path} has no records")]
    problems = [
        Problem(f"{key}.{field}", f"{name!r} is not a field of {source.path} (fields: {sorted(first)})")
        for field, name in (
            ("audio_field", source.audio_field),
            ("text_field", source.text_field),
            ("continuation_field", source.continuation_field),
            ("continuation_group_field", source.continuation_group_field),
            ("word_times_field", source.word_times_field),
        )
        if name is not None and not has_field(first, name)
    ]
    if not (source.continuation_field or source.continuation_group_field or source.word_times_field):
        problems.append(
            Problem(
                key,
                "a sample needs text after its speech: set word_times_field (word timestamps), "
                "continuation_field (the next segment's text) or continuation_group_field (the field "
                "that groups consecutive segments: a book, a speaker's video)",
            )
        )
    return problems


def data_problems(config: RunConfig) -> list[Problem]:
    problems = [p for key, source in text_sources(config) if (p := _first_text(key, source))]
    for n, source in enumerate(config.data.natural):
        problems += _first_speech(f"data.natural[{n}]", source)
    if "pool" not in config.data.model_fields_set:
        problems.append(
            Problem(
                "data.pool",
                "not set, so the candidates for active selection would be Debian's fortunes (the "
                "default); set data.pool to the text pool to select from (the paper's: a web pool such "
                "as FineWeb-Edu, {kind: hf, path: HuggingFaceFW/fineweb-edu}), or to {kind: fortunes} "
                "to mean it",
            )
        )
    return problems


# ------------------------------------------------------------------------------------- mixtures


def mixture_problems(config: RunConfig) -> list[Problem]:
    data, stages = config.data, config.stages
    has = {"natural": bool(data.natural) or data.natural_standin is not None, "text": True, "active": False}
    mixtures = {"stages.stage1_mix": (stages.stage1_mix, stages.stage1_steps)}
    mixtures["stages.stage2_mix"] = (stages.stage2_mix, stages.stage2_rounds * stages.stage2_steps_per_round)
    mixtures["stages.warmup.mix"] = (stages.warmup.mix, stages.warmup.steps)
    problems = []
    for key, (mix, steps) in mixtures.items():
        for source, weight in mix.items():
            if not steps or not weight:
                continue
            if source == "natural" and not has["natural"]:
                problems.append(
                    Problem(
                        key,
                        f"draws {weight:g} from natural speech, but there is none: set data.natural "
                        "(recorded corpora, e.g. LibriHeavy or Emilia) or data.natural_standin",
                    )
                )
            if source == "active" and key != "stages.stage2_mix":
                problems.append(Problem(key, "draws from active selections, which only stage II makes"))
    return problems


# --------------------------------------------------------------------------------------- models


def model_refs(config: RunConfig) -> Iterator[tuple[str, ModelRef]]:
    m = config.models
    yield "models.llm", m.llm
    yield "models.encoder.model", m.encoder.model
    yield "models.asr", m.asr
    yield "models.embedder", m.embedder
    if config.tts.backend == TTSBackendKind.KOKORO:
        yield "tts.kokoro_model", config.tts.kokoro_model


def _model_config(key: str, ref: ModelRef) -> Problem | None:
    from salad_ray.assets import ASSET_PREFIX, resolve

    if ref.source is None:  # a random model of the family's default architecture: nothing to load
        return None
    source = ref.source  # a random model takes its config (and tokenizer) from here too
    try:
        if source.startswith(ASSET_PREFIX) or Path(source).expanduser().exists():
            found = resolve(ref.model_copy(update={"random_init": False, "overrides": {}})) / "config.json"
            if not found.is_file():
                return Problem(key, f"{source} holds no config.json: set {key}.source to a model directory")
        else:
            from huggingface_hub import hf_hub_download

            hf_hub_download(source, "config.json")
    except Exception as e:  # AssetError, and the hub's many types: offline, gated, missing
        return Problem(
            key,
            f"the configuration of {source} cannot be loaded ({_first_line(e)}); set {key}.source to a "
            "hub id this machine can reach or to a local model directory",
        )
    return None


def model_problems(config: RunConfig) -> list[Problem]:
    return [p for key, ref in model_refs(config) if (p := _model_config(key, ref))]


# ------------------------------------------------------------------------------------ resources


def resource_problems(config: RunConfig, cluster: Mapping[str, float]) -> list[Problem]:
    """What the run asks of a cluster (``ray.cluster_resources()``) that no node of it offers."""
    from salad_ray.resources import demands

    askers: dict[tuple[str, str], list[str]] = {}  # (resource, key asking) -> the kinds of actor
    for need in demands(config):
        for resource in need.bundle:
            if resource != "CPU" and cluster.get(resource, 0.0) <= 0:
                askers.setdefault((resource, need.keys[resource]), []).append(need.what)
    offered = sorted(k for k, v in cluster.items() if v > 0)
    return [
        Problem(
            key,
            f"no node of the cluster offers {resource!r} (it has {offered}), asked for by the "
            f"{', '.join(whats)}; add a node group with it or unset {key}",
        )
        for (resource, key), whats in askers.items()
    ]


def layout_problems(config: RunConfig, layout: Path) -> list[Problem]:
    from salad_ray.capacity import check_files

    if not layout.is_file():
        return [Problem("--layout", f"{layout} is not a file")]
    found = check_files(config, [layout])
    if all(v is None for v in found.values()):
        return [
            Problem("--layout", f"{layout} holds no cluster layout (RayCluster, RayJob, RayService, ray up)")
        ]
    return [Problem(f"--layout {name}", p) for name, problems in found.items() for p in problems or []]


# -------------------------------------------------------------------------------------- tracker

TRACKER_PACKAGES = {"tensorboard": "tensorboard"}  # train.tracker -> the package it writes with


def tracker_problems(config: RunConfig) -> list[Problem]:
    import importlib.util

    package = TRACKER_PACKAGES.get(config.train.tracker)
    if package is None or importlib.util.find_spec(package) is not None:
        return []
    return [
        Problem(
            "train.tracker",
            f"{config.train.tracker} needs the {package} package, which this Python lacks: "
            "install salad-ray[tracking], or set train.tracker: none",
        )
    ]


# ---------------------------------------------------------------------------------------- check


def check(config: RunConfig, cluster: Mapping[str, float] | None = None, layout: Path | None = None) -> None:
    """Every check of the module docstring; raises :class:`PreflightFailed` with all problems."""
    problems = data_problems(config) + mixture_problems(config) + model_problems(config)
    problems += tracker_problems(config)
    if cluster is not None:
        problems += resource_problems(config, cluster)
    if layout is not None:
        problems += layout_problems(config, layout)
    if problems:
        raise PreflightFailed(problems)
