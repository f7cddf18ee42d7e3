"""Multiple-choice benchmark items and where they come from.

An :class:`Item` is a context, its options and the index of the right one. Each option is scored as a
continuation of the context (:mod:`salad_ray.eval.likelihood`), so an item reads naturally as
``context + " " + option``.

Sources (``eval.benchmarks`` in the run config, :class:`~salad_ray.config.BenchmarkSpec`):

* ``fortune-cloze`` (offline, the ``local`` preset): Debian fortunes of ``min_words``..``max_words``
  words from ``categories``, taken in order of their text id (a hash, so a fixed pseudo-random
  order). The last quarter of a fortune's words (at least 3) is its true ending; the distractors are
  the endings of other fortunes of the set, of similar length. Options are shuffled with a
  generator seeded by the item id, so the benchmark is a deterministic function of its spec.
* ``jsonl``: a local file, one item per line::

      {"id": "q1", "context": "The sun rises in the", "options": ["east.", "west."], "answer": 0}

  ``id`` is optional (a hash of the context is used); ``answer`` is the 0-based index of the right
  option; every other key is ignored.
* the paper's suite from Hugging Face datasets (an id, or a directory saved with
  ``save_to_disk``): ``storycloze``, ``mmsu``, ``openbookqa``, ``hellaswag``, ``arc-challenge``,
  ``piqa``. The row formats each loader reads are those of the default dataset ids below. MMSU
  (VoiceBench) is spoken MMLU-Pro in 12 domains: salad-ray reads MMLU-Pro's text and speaks it itself.

Few-shot examples of an item are other items of the same benchmark (:func:`shots_for`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salad_ray.config import BenchmarkSpec, TextSource
from salad_ray.corpus import normalize_text, read_texts


@dataclass(frozen=True)
class Item:
    item_id: str
    task: str
    context: str
    options: tuple[str, ...]
    answer: int

    def __post_init__(self) -> None:
        if not self.context.strip():
            raise ValueError(f"{self.task} item {self.item_id}: empty context")
        if len(self.options) < 2 or any(not o.strip() for o in self.options):
            raise ValueError(f"{self.task} item {self.item_id}: needs at least 2 non-empty options")
        if not 0 <= self.answer < len(self.options):
            raise ValueError(
                f"{self.task} item {self.item_id}: answer {self.answer} is not an option index "
                f"(0..{len(self.options) - 1})"
            )


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- offline cloze

ATTRIBUTION = re.compile(r"\s+--\s.*$")


def fortune_cloze(spec: BenchmarkSpec, seed: int = 0) -> list[Item]:
    """The offline cloze benchmark (module docstring): last-quarter endings of fortunes."""
    source = TextSource(
        kind="fortunes", categories=spec.categories, min_words=spec.min_words, max_words=spec.max_words
    )
    records, split = [], []
    for r in sorted(read_texts(source), key=lambda r: r.text_id):
        words = ATTRIBUTION.sub("", r.text).split()
        if len(words) < spec.min_words:
            continue
        cut = len(words) - max(3, round(len(words) / 4))
        records.append(r)
        split.append((" ".join(words[:cut]), " ".join(words[cut:])))
        if spec.limit and len(records) >= spec.limit:
            break
    if len(records) < spec.options:
        raise ValueError(f"{spec.name}: {len(records)} fortunes, fewer than {spec.options} options")
    lengths = np.array([len(ending.split()) for _, ending in split])
    items = []
    for n, (record, (context, ending)) in enumerate(zip(records, split, strict=True)):
        rng = np.random.default_rng(int(_hash(record.text_id, seed), 16))
        # distractors: endings of other items, the closest in length first (ties broken at random)
        closeness = np.abs(lengths - lengths[n]) + rng.random(len(split))
        closeness[n] = np.inf
        others = [split[j][1] for j in np.argsort(closeness)]
        distractors = [e for e in dict.fromkeys(others) if e != ending][: spec.options - 1]
        options = [ending, *distractors]
        order = rng.permutation(len(options))
        items.append(
            Item(
                record.text_id,
                spec.name,
                context,
                tuple(options[i] for i in order),
                int(np.nonzero(order == 0)[0][0]),
            )
        )
    return items


# ------------------------------------------------------------------------------------ local JSONL


def jsonl_items(spec: BenchmarkSpec) -> list[Item]:
    path = Path(spec.path)  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"{spec.name}: benchmark file {path} does not exist")
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
            context, options, answer = row["context"], row["options"], row["answer"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: not an item ({e}); expected context, options, answer") from None
        if not isinstance(options, list) or not isinstance(answer, int):
            raise ValueError(f"{where}: options must be a list and answer an integer index")
        items.append(
            Item(
                str(row.get("id", _hash(context))),
                spec.name,
                normalize_text(context),
                tuple(normalize_text(o) for o in options),
                answer,
            )
        )
    return items[: spec.limit]


# ------------------------------------------------------------------------- Hugging Face datasets


def _letter_answer(labels: list[str], key: str) -> int:
    return labels.index(key)


def _storycloze(row: dict) -> tuple[str, list[str], int]:
    context = " ".join(row[f"input_sentence_{i}"] for i in range(1, 5))
    return context, [row["sentence_quiz1"], row["sentence_quiz2"]], int(row["answer_right_ending"]) - 1


def _mmsu(row: dict) -> tuple[str, list[str], int]:
    return f"Question: {row['question']}\nAnswer:", list(row["options"]), int(row["answer_index"])


def _openbookqa(row: dict) -> tuple[str, list[str], int]:
    choices = row["choices"]
    return (
        row["question_stem"],
        list(choices["text"]),
        _letter_answer(list(choices["label"]), row["answerKey"]),
    )


def _hellaswag(row: dict) -> tuple[str, list[str], int]:
    return f"{row['activity_label']}: {row['ctx']}", list(row["endings"]), int(row["label"])


def _arc(row: dict) -> tuple[str, list[str], int]:
    choices = row["choices"]
    return (
        f"Question: {row['question']}\nAnswer:",
        list(choices["text"]),
        _letter_answer(list(choices["label"]), row["answerKey"]),
    )


def _piqa(row: dict) -> tuple[str, list[str], int]:
    return f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], int(row["label"])


@dataclass(frozen=True)
class HFTask:
    path: str  # default dataset id
    name: str | None  # dataset configuration
    split: str
    row: Callable[[dict], tuple[str, list[str], int]]


# MMSU's 12 domains (VoiceBench), as MMLU-Pro categories.
MMSU_CATEGORIES = frozenset(
    {
        "biology",
        "business",
        "chemistry",
        "economics",
        "engineering",
        "health",
        "history",
        "law",
        "other",
        "philosophy",
        "physics",
        "psychology",
    }
)

HF_TASKS = {
    "storycloze": HFTask("LSDSem/story_cloze", "2016", "validation", _storycloze),
    "mmsu": HFTask("TIGER-Lab/MMLU-Pro", None, "test", _mmsu),
    "openbookqa": HFTask("allenai/openbookqa", "main", "test", _openbookqa),
    "hellaswag": HFTask("Rowan/hellaswag", None, "validation", _hellaswag),
    "arc-challenge": HFTask("allenai/ai2_arc", "ARC-Challenge", "test", _arc),
    "piqa": HFTask("ybisk/piqa", None, "validation", _piqa),
}


def hf_rows(spec: BenchmarkSpec, task: HFTask) -> Iterable[dict]:
    import datasets

    path = spec.path or task.path
    try:
        if Path(path).is_dir():
            data = datasets.load_from_disk(path)
            if isinstance(data, datasets.DatasetDict):
                data = data[spec.split or task.split]
        else:
            data = datasets.load_dataset(path, task.name, split=spec.split or task.split)
    except Exception as e:  # offline, gated, or renamed: say what to do instead
        raise RuntimeError(
            f"{spec.name}: cannot load the dataset {path!r} ({type(e).__name__}: {e}). Save it with "
            f"datasets' save_to_disk somewhere reachable and set eval.benchmarks[].path to that "
            f"directory, or convert it to the JSONL item format (salad_ray/eval/items.py)."
        ) from e
    return data


def hf_items(spec: BenchmarkSpec) -> list[Item]:
    task = HF_TASKS[spec.kind]
    items = []
    for row in hf_rows(spec, task):
        if spec.kind == "mmsu" and row.get("category") not in MMSU_CATEGORIES:
            continue
        context, options, answer = task.row(row)
        items.append(
            Item(
                _hash(spec.kind, context, options),
                spec.name,
                normalize_text(context),
                tuple(normalize_text(o) for o in options),
                answer,
            )
        )
        if spec.limit and len(items) >= spec.limit:
            break
    return items


def load_items(spec: BenchmarkSpec, seed: int = 0) -> list[Item]:
    """The items of one benchmark (deterministic for a given spec and seed)."""
    if spec.kind == "fortune-cloze":
        return fortune_cloze(spec, seed)
    if spec.kind == "jsonl":
        return jsonl_items(spec)
    return hf_items(spec)


def shots_for(items: list[Item], index: int, shots: int, seed: int) -> list[Item]:
    """Up to ``shots`` other items of the benchmark as examples for item ``index`` (seeded by its id)."""
    if shots == 0 or len(items) < 2:
        return []
    rng = np.random.default_rng(int(_hash(items[index].item_id, seed, "shots"), 16))
    others = [j for j in rng.permutation(len(items)) if j != index][:shots]
    return [items[j] for j in others]
