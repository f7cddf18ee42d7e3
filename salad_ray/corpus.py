"""Text corpora: read a :class:`~salad_ray.config.TextSource` into normalised, domain-labelled records.

Offline sources for the ``local`` preset are Debian's ``fortunes`` (each category file is a domain)
and, at scale, JSONL / Parquet files or Hugging Face datasets. Records are normalised (NFKC, one
space between words) and kept when they read as prose of ``min_words`` to ``max_words`` words;
record ids are a hash of the normalised text, so the same text has the same id everywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salad_ray.config import TextSource

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Categories that are not prose (pictures made of characters, untranslated text).
FORTUNES_EXCLUDED = frozenset({"ascii-art", "translate-me"})


@dataclass(frozen=True)
class TextRecord:
    text_id: str
    text: str
    domain: str


def normalize_text(text: str) -> str:
    """NFKC, whitespace runs to one space, stripped."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_prose(text: str) -> bool:
    """Mostly letters and ordinary punctuation: speakable, not a table or a drawing."""
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    return bool(visible) and letters / len(visible) >= 0.75


def _fortune_categories(source: TextSource) -> list[str]:
    if not FORTUNES_DIR.is_dir():
        raise FileNotFoundError(
            f"{FORTUNES_DIR} is missing: install Debian's 'fortunes' package (make setup does)"
        )
    available = sorted(
        p.name
        for p in FORTUNES_DIR.iterdir()
        if p.is_file() and not p.suffix and p.name not in FORTUNES_EXCLUDED
    )
    if source.categories is None:
        return available
    unknown = sorted(set(source.categories) - set(available))
    if unknown:
        raise ValueError(f"unknown fortunes categories {unknown}; available: {', '.join(available)}")
    return list(source.categories)


def _read_fortunes(source: TextSource) -> Iterator[tuple[str, str]]:
    for category in _fortune_categories(source):
        raw = (FORTUNES_DIR / category).read_text(encoding="utf-8", errors="replace")
        for entry in raw.split("\n%\n"):
            yield entry, category


def _read_table(source: TextSource) -> Iterator[tuple[str, str]]:
    path = Path(source.path)  # type: ignore[arg-type]
    suffix = ".jsonl" if source.kind == "jsonl" else ".parquet"
    files = sorted(path.rglob(f"*{suffix}")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no {suffix} files at {path}")
    for file in files:
        if source.kind == "jsonl":
            with open(file, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    if line.strip():
                        row = json.loads(line)
                        if source.text_field not in row:
                            raise KeyError(f"{file}:{line_no}: no field {source.text_field!r}")
                        yield (
                            row[source.text_field],
                            str(row.get(source.domain_field, file.stem))
                            if source.domain_field
                            else file.stem,
                        )
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(file)
            if source.text_field not in table.column_names:
                raise KeyError(f"{file}: no column {source.text_field!r} (columns: {table.column_names})")
            texts = table.column(source.text_field).to_pylist()
            domains = (
                table.column(source.domain_field).to_pylist()
                if source.domain_field
                else [file.stem] * len(texts)
            )
            yield from zip(texts, map(str, domains), strict=True)


def _read_hf(source: TextSource) -> Iterator[tuple[str, str]]:
    import datasets

    path = Path(source.path)  # type: ignore[arg-type]
    data = (
        datasets.load_from_disk(str(path))
        if path.is_dir()
        else datasets.load_dataset(source.path, split=source.split, streaming=True)
    )
    if isinstance(data, datasets.DatasetDict):
        data = data[source.split]
    for row in data:
        yield row[source.text_field], str(row.get(source.domain_field, "hf")) if source.domain_field else "hf"


def read_texts(source: TextSource) -> Iterator[TextRecord]:
    """Normalised prose records of a source, in the source's order, without duplicates."""
    readers = {"fortunes": _read_fortunes, "jsonl": _read_table, "parquet": _read_table, "hf": _read_hf}
    if source.kind not in readers:
        raise NotImplementedError(f"text source kind {source.kind!r} is not readable yet")
    seen: set[str] = set()
    count = 0
    for raw, domain in readers[source.kind](source):
        text = normalize_text(raw or "")
        n_words = len(text.split())
        if not source.min_words <= n_words <= source.max_words or not _is_prose(text):
            continue
        tid = text_id(text)
        if tid in seen:
            continue
        seen.add(tid)
        yield TextRecord(tid, text, domain)
        count += 1
        if source.limit is not None and count >= source.limit:
            return


def sample_across_domains(records: list[TextRecord], n: int, seed: int) -> list[TextRecord]:
    """``n`` records spread evenly over domains (round robin over shuffled domains), deterministic."""
    rng = np.random.default_rng(seed)
    by_domain: dict[str, list[TextRecord]] = {}
    for r in records:
        by_domain.setdefault(r.domain, []).append(r)
    queues = {d: [rs[i] for i in rng.permutation(len(rs))] for d, rs in sorted(by_domain.items())}
    order = [sorted(queues)[i] for i in rng.permutation(len(queues))]
    picked: list[TextRecord] = []
    while len(picked) < n and any(queues.values()):
        for d in order:
            if queues[d] and len(picked) < n:
                picked.append(queues[d].pop())
    return picked
