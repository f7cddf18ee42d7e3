"""Text corpora: read a :class:`~salad_ray.config.TextSource` into normalised, domain-labelled records.

Offline sources for the ``local`` preset are Debian's ``fortunes`` (each category file is a domain)
and ``dict-gcide`` (the dictionary's literary quotations); at scale, JSONL / Parquet files or
Hugging Face datasets. Two ways to read:

* :func:`raw_texts` yields every record as read (:class:`RawText`), for the data pipeline, which
  validates each one (:func:`check_text`) and quarantines the bad ones with their reason;
* :func:`read_texts` yields only usable prose of ``min_words`` to ``max_words`` words, for choosing
  texts (held-out sets, pools).

Held-out-only domains (``data.heldout_only``): every source a student trains on or is selected from
(the natural stand-in, the text set, the pool and so its probes) reads with
``exclude_domains=data.heldout_only``; only the held-out set (:func:`heldout_records`) reads them, so
F and M on those domains are measured on a domain no training text touched.

Texts are normalised (NFKC, control characters dropped, one space between words); a record id is a
hash of the normalised text, so the same text has the same id everywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salad_ray.config import DataConfig, TextSource

FORTUNES_DIR = Path("/usr/share/games/fortunes")
GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")
# Categories that are not prose (pictures made of characters, untranslated text).
FORTUNES_EXCLUDED = frozenset({"ascii-art", "translate-me"})


@dataclass(frozen=True)
class TextRecord:
    text_id: str
    text: str
    domain: str


class TextRejected(ValueError):
    """A text the pipeline will not use; the message is the quarantine reason."""


def normalize_text(text: str) -> str:
    """NFKC, control characters dropped, whitespace runs to one space, stripped."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def check_text(raw: str | bytes, min_words: int, max_words: int) -> str:
    """The normalised text, or TextRejected naming why it cannot be used."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TextRejected(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not isinstance(raw, str):
        raise TextRejected(f"text is {type(raw).__name__}, not a string")
    text = normalize_text(raw)
    if not text:
        raise TextRejected("empty or whitespace-only text")
    n = len(text.split())
    if n > max_words:
        raise TextRejected(f"over-long text: {n} words > {max_words}")
    if n < min_words:
        raise TextRejected(f"too short: {n} words < {min_words}")
    return text


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


@dataclass(frozen=True)
class RawText:
    """A record as read, before validation: ``value`` may be bytes that are not UTF-8, and
    ``problem`` says why a record could not even be read as a text (bad JSON, missing field)."""

    value: str | bytes
    domain: str
    problem: str | None = None

    @property
    def text_id(self) -> str:
        """The id of the normalised text, or of the raw bytes when they are not a text."""
        value = self.value
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return hashlib.sha256(value).hexdigest()[:16]
        return text_id(normalize_text(value)) if self.problem is None else text_id(f"{self.problem}\n{value}")


def _read_fortunes(source: TextSource) -> Iterator[RawText]:
    for category in _fortune_categories(source):
        raw = (FORTUNES_DIR / category).read_text(encoding="utf-8", errors="replace")
        for entry in raw.split("\n%\n"):
            yield RawText(entry, category)


def _read_gcide(source: TextSource) -> Iterator[RawText]:
    """The dictionary's quotations: indented paragraphs of literary prose, attributions removed."""
    import gzip

    if not GCIDE_FILE.is_file():
        raise FileNotFoundError(
            f"{GCIDE_FILE} is missing: install Debian's 'dict-gcide' package (make setup does)"
        )
    with gzip.open(GCIDE_FILE, "rt", encoding="utf-8", errors="replace") as f:
        for paragraph in f.read().split("\n\n"):
            lines = [line for line in paragraph.split("\n") if line.strip() and "[1913 Webster]" not in line]
            if lines and all(line.startswith(" " * 10) for line in lines):
                yield RawText(re.sub(r"\s--\S.*$", "", " ".join(line.strip() for line in lines)), "gcide")


def _files(source: TextSource, suffix: str) -> list[Path]:
    path = Path(source.path)  # type: ignore[arg-type]
    files = sorted(path.rglob(f"*{suffix}")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no {suffix} files at {path}")
    return files


def _read_jsonl(source: TextSource) -> Iterator[RawText]:
    for file in _files(source, ".jsonl"):
        with open(file, "rb") as f:  # bytes: one non-UTF-8 line must not stop the file
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{file.name}:{line_no}"
                try:
                    row = json.loads(line)
                except ValueError as e:
                    if isinstance(e, UnicodeDecodeError):
                        yield RawText(line, file.stem)  # check_text names the encoding problem
                    else:
                        yield RawText(line, file.stem, f"{where}: not valid JSON ({e})")
                    continue
                if not isinstance(row, dict) or source.text_field not in row:
                    yield RawText(line, file.stem, f"{where}: no field {source.text_field!r}")
                    continue
                domain = str(row.get(source.domain_field, file.stem)) if source.domain_field else file.stem
                yield RawText(row[source.text_field], domain)


def _read_parquet(source: TextSource) -> Iterator[RawText]:
    import pyarrow.parquet as pq

    for file in _files(source, ".parquet"):
        table = pq.read_table(file)
        if source.text_field not in table.column_names:
            raise KeyError(f"{file}: no column {source.text_field!r} (columns: {table.column_names})")
        texts = table.column(source.text_field).to_pylist()
        domains = (
            table.column(source.domain_field).to_pylist() if source.domain_field else [file.stem] * len(texts)
        )
        for value, domain in zip(texts, domains, strict=True):
            yield RawText(value if value is not None else "", str(domain))


def _read_hf(source: TextSource) -> Iterator[RawText]:
    import datasets

    path = Path(source.path)  # type: ignore[arg-type]
    if path.is_dir():
        data = datasets.load_from_disk(str(path))
    else:
        data = datasets.load_dataset(source.path, split=source.split, streaming=True)
    if isinstance(data, datasets.DatasetDict):
        data = data[source.split]
    for row in data:
        yield RawText(
            row[source.text_field] or "",
            str(row.get(source.domain_field, "hf")) if source.domain_field else "hf",
        )


READERS = {
    "fortunes": _read_fortunes,
    "gcide": _read_gcide,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "hf": _read_hf,
}


def raw_texts(source: TextSource) -> Iterator[RawText]:
    """Every record of a source as read, unvalidated (the pipeline validates and quarantines)."""
    for count, record in enumerate(READERS[source.kind](source), 1):
        yield record
        if source.limit is not None and count >= source.limit:
            return


def read_texts(source: TextSource, exclude_domains: Collection[str] = ()) -> Iterator[TextRecord]:
    """Normalised prose records of a source that fit its word window, in order, without duplicates.

    For choosing texts (held-out sets, pools): records that are not usable are skipped silently, and
    so are records of ``exclude_domains`` (the held-out-only domains, for every training source).
    ``limit`` counts the records returned.
    """
    seen: set[str] = set()
    count = 0
    excluded = frozenset(exclude_domains)
    for record in READERS[source.kind](source):
        if record.problem is not None or record.domain in excluded:
            continue
        try:
            text = check_text(record.value, source.min_words, source.max_words)
        except TextRejected:
            continue
        tid = text_id(text)
        if tid in seen or not _is_prose(text):
            continue
        seen.add(tid)
        yield TextRecord(tid, text, record.domain)
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


def heldout_records(data: DataConfig, seed: int) -> list[TextRecord]:
    """The held-out texts, a deterministic function of the config.

    ``data.heldout.samples`` records spread across the domains of ``data.heldout.text``
    (:func:`sample_across_domains`), then ``data.heldout.unseen_samples`` more from the
    ``data.heldout_only`` domains alone, so the unseen domains are measured on enough samples.
    """
    h = data.heldout
    records = list(read_texts(h.text))
    picked = sample_across_domains(records, h.samples, seed)
    if data.heldout_only and h.unseen_samples:
        chosen, only = {r.text_id for r in picked}, set(data.heldout_only)
        unseen = [r for r in records if r.domain in only and r.text_id not in chosen]
        if not unseen and not any(r.domain in only for r in picked):
            raise ValueError(
                f"data.heldout_only {sorted(only)}: no held-out text of these domains in data.heldout.text"
            )
        picked += sample_across_domains(unseen, h.unseen_samples, seed)
    return picked
