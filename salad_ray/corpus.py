"""Text corpora: read a :class:`~salad_ray.config.TextSource` into normalised, domain-labelled records.

Offline sources for the ``local`` preset are Debian's ``fortunes`` (each category file is a domain)
and ``dict-gcide`` (the dictionary's literary quotations); at scale, JSONL / Parquet files or
Hugging Face datasets. Two ways to read:

* :func:`screen_texts` yields every record read, once, in order: usable prose as a
  :class:`TextRecord`, every other record as a :class:`Rejected` naming its
  :class:`~salad_ray.accounting.Reason` (unparseable, not UTF-8, empty, outside the word window, an
  over-long word, markup, not prose, a held-out-only domain, a held-out text, a duplicate). The
  pipelines that read a source (the text set, the natural stand-in) quarantine or count each one;
* :func:`read_texts` yields only the usable records, for choosing texts (held-out sets, pools).

Every record keeps where it was read (:attr:`RawText.origin`: file and line, file and row, dataset
and row, fortune file and entry, dictionary paragraph) and its value as read (bytes that are not
UTF-8 stay bytes).

Held-out-only domains (``data.heldout_only``): every source a student trains on or is selected from
(the natural stand-in, the text set, the pool and so its probes) reads with
``exclude_domains=data.heldout_only``; only the held-out set (:func:`heldout_records`) reads them, so
F and M on those domains are measured on a domain no training text touched.

Texts are normalised (NFKC, control and format characters such as NUL or zero-width spaces dropped,
one space between words); a record id is a hash of the normalised text, so the same text has the
same id everywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from salad_ray.accounting import Reason, Refusal
from salad_ray.config import DataConfig, TextSource

FORTUNES_DIR = Path("/usr/share/games/fortunes")
GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")
# Categories that are not prose (pictures made of characters, untranslated text).
FORTUNES_EXCLUDED = frozenset({"ascii-art", "translate-me"})
# The longest word a text may hold: English words run to ~30 letters (45 for the dictionary's
# longest); anything longer is a URL, a hash or run-together text that no voice can speak.
MAX_WORD_CHARS = 64
# Markup such as SSML's </speak>, <break time="1s"/> or <prosody rate="slow">, which some TTS
# engines act on instead of speaking: closing tags, empty-element tags and tags with attributes
# (a bare <name> is how chat logs in the fortunes name a speaker).
MARKUP = re.compile(
    r"</[A-Za-z][\w:-]*>|<[A-Za-z][\w:-]*(\s[^<>]*)?/>|<[A-Za-z][\w:-]*\s+[\w:-]+=[\"'][^<>]*>"
)


@dataclass(frozen=True)
class TextRecord:
    """A usable text: ``text`` normalised, ``text_id`` its hash; ``origin`` and ``raw`` (the text as
    read, before normalisation) when it was read from a source here, so that a later refusal
    quarantines the record as read. Records compare by id, text and domain."""

    text_id: str
    text: str
    domain: str
    origin: str = field(default="", compare=False)
    raw: str | None = field(default=None, compare=False)


class TextRejected(ValueError):
    """A text the pipeline will not use, with its :class:`~salad_ray.accounting.Refusal`."""

    def __init__(self, reason: Reason, detail: str = ""):
        self.refusal = Refusal(reason, detail)
        super().__init__(self.refusal.message)


def normalize_text(text: str) -> str:
    """NFKC, control and format characters (NUL, zero-width space, ...) to spaces, whitespace runs
    to one space, stripped."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def check_text(raw: str | bytes, min_words: int, max_words: int) -> str:
    """The normalised text, or TextRejected naming why it cannot be used: not UTF-8, not a string,
    empty, more than ``max_words`` or fewer than ``min_words`` words, a word over ``MAX_WORD_CHARS``."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TextRejected(Reason.NOT_UTF8, f"{e.reason} at byte {e.start}") from None
    if not isinstance(raw, str):
        raise TextRejected(Reason.NOT_A_STRING, f"text is {type(raw).__name__}")
    text = normalize_text(raw)
    if not text:
        raise TextRejected(Reason.EMPTY)
    words = text.split()
    if len(words) > max_words:
        raise TextRejected(Reason.OVER_LONG, f"{len(words)} words > {max_words}")
    if len(words) < min_words:
        raise TextRejected(Reason.TOO_SHORT, f"{len(words)} words < {min_words}")
    longest = max(words, key=len)
    if len(longest) > MAX_WORD_CHARS:
        raise TextRejected(
            Reason.OVER_LONG_WORD, f"{len(longest)} characters > {MAX_WORD_CHARS} ({longest[:20]}...)"
        )
    return text


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unspeakable(text: str) -> Refusal | None:
    """Why a normalised text is not prose to speak (markup; under 75 % letters: a table, a drawing,
    emoji, digits, a shell command), or None when it is."""
    tag = MARKUP.search(text)
    if tag:
        return Refusal(Reason.MARKUP, f"tag {tag.group()[:40]!r}")
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if letters < 0.75 * len(visible):
        return Refusal(Reason.NOT_PROSE, f"{letters} letters of {len(visible)} characters")
    return None


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
    """A record as read, before validation.

    ``value`` is the text as read (bytes when they are not UTF-8; for a line that is not a JSON
    object with a string text field, the whole line); ``origin`` says where it was read (``file:line``,
    ``file row n``, ``dataset [split] row n``, ``fortune-file #n``, ``dictionary paragraph n``);
    ``unreadable`` says why it could not even be read as a text (unparseable JSON, no text field).
    """

    value: str | bytes
    domain: str
    origin: str
    unreadable: Refusal | None = None


@dataclass(frozen=True)
class Rejected:
    """A record :func:`screen_texts` does not use, and why; the pipelines quarantine it, or count it
    as skipped when its reason :attr:`~salad_ray.accounting.Reason.skips`."""

    record: RawText
    refusal: Refusal

    @property
    def text_id(self) -> str:
        """An id unique to this record as read: a hash of its origin and its value."""
        value = self.record.value
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        return hashlib.sha256(self.record.origin.encode() + b"\n" + raw).hexdigest()[:16]


def _as_read(value: bytes) -> str | bytes:
    """Bytes as a string when they are UTF-8, else the bytes themselves."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _read_fortunes(source: TextSource) -> Iterator[RawText]:
    for category in _fortune_categories(source):
        path = FORTUNES_DIR / category
        raw = path.read_bytes()
        entries = raw.split(b"\n%\n")
        if raw.endswith(b"\n%\n"):  # the last separator ends the file, it starts no entry
            entries.pop()
        for n, entry in enumerate(entries, 1):
            yield RawText(_as_read(entry), category, f"{path} #{n}")


def _read_gcide(source: TextSource) -> Iterator[RawText]:
    """The dictionary's quotations: indented paragraphs of literary prose, attributions removed.

    Every other paragraph (headwords, definitions) is yielded too, unreadable as a quotation
    (``Reason.NOT_A_QUOTATION``, a skip), so that the reading is counted whole."""
    import gzip

    if not GCIDE_FILE.is_file():
        raise FileNotFoundError(
            f"{GCIDE_FILE} is missing: install Debian's 'dict-gcide' package (make setup does)"
        )
    with gzip.open(GCIDE_FILE, "rb") as f:
        for n, raw in enumerate(f.read().split(b"\n\n"), 1):
            origin = f"{GCIDE_FILE} paragraph {n}"
            paragraph = _as_read(raw)
            if isinstance(paragraph, bytes):
                yield RawText(paragraph, "gcide", origin)  # check_text names the encoding
                continue
            lines = [line for line in paragraph.split("\n") if line.strip() and "[1913 Webster]" not in line]
            if lines and all(line.startswith(" " * 10) for line in lines):
                text = re.sub(r"\s--\S.*$", "", " ".join(line.strip() for line in lines))
                yield RawText(text, "gcide", origin)
            else:
                yield RawText(paragraph, "gcide", origin, Refusal(Reason.NOT_A_QUOTATION))


def _files(source: TextSource, suffix: str) -> list[Path]:
    path = Path(source.path)  # type: ignore[arg-type]
    files = sorted(path.rglob(f"*{suffix}")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no {suffix} files at {path}")
    return files


def _read_jsonl(source: TextSource) -> Iterator[RawText]:
    """One record per line, blank lines included (they are refused as empty, not passed over)."""
    for file in _files(source, ".jsonl"):
        with open(file, "rb") as f:  # bytes: one non-UTF-8 line must not stop the file
            for line_no, raw_line in enumerate(f, 1):
                line, origin = _as_read(raw_line.rstrip(b"\r\n")), f"{file}:{line_no}"
                if isinstance(line, bytes):
                    yield RawText(line, file.stem, origin)  # check_text names the encoding
                    continue
                if not line.strip():
                    yield RawText(line, file.stem, origin)  # check_text refuses it as empty
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    yield RawText(line, file.stem, origin, Refusal(Reason.UNPARSEABLE, str(e)))
                    continue
                if not isinstance(row, dict) or source.text_field not in row:
                    yield RawText(
                        line, file.stem, origin, Refusal(Reason.NO_TEXT_FIELD, repr(source.text_field))
                    )
                    continue
                domain = str(row.get(source.domain_field, file.stem)) if source.domain_field else file.stem
                value = row[source.text_field]
                if isinstance(value, str):
                    yield RawText(value, domain, origin)
                else:
                    refusal = Refusal(Reason.NOT_A_STRING, f"{source.text_field!r} is {type(value).__name__}")
                    yield RawText(line, domain, origin, refusal)


def _value(value, field: str) -> tuple[str, Refusal | None]:
    """A dataset cell as a record's value: a null is an empty text, any other non-string is refused."""
    if value is None or isinstance(value, str):
        return value or "", None
    return str(value), Refusal(Reason.NOT_A_STRING, f"{field!r} is {type(value).__name__}")


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
        for n, (value, domain) in enumerate(zip(texts, domains, strict=True)):
            text, refusal = _value(value, source.text_field)
            yield RawText(text, str(domain), f"{file} row {n}", refusal)


def _read_hf(source: TextSource) -> Iterator[RawText]:
    """One record per row; a row without the (possibly dotted) text field is refused, not skipped."""
    from salad_ray.hfdata import get_field, has_field, open_dataset

    where = f"{source.path}" + (f" ({source.name})" if source.name else "") + f" [{source.split}]"
    for n, row in enumerate(open_dataset(source)):
        origin = f"{where} row {n}"
        if not has_field(row, source.text_field):
            yield RawText("", "hf", origin, Refusal(Reason.NO_TEXT_FIELD, repr(source.text_field)))
            continue
        value, refusal = _value(get_field(row, source.text_field), source.text_field)
        labelled = source.domain_field and has_field(row, source.domain_field)
        domain = str(get_field(row, source.domain_field)) if labelled else "hf"
        yield RawText(value, domain, origin, refusal)


READERS = {
    "fortunes": _read_fortunes,
    "gcide": _read_gcide,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "hf": _read_hf,
}


def screen_texts(
    source: TextSource, exclude_domains: Collection[str] = (), exclude_ids: Collection[str] = ()
) -> Iterator[TextRecord | Rejected]:
    """Every record of a source, once and in order: a :class:`TextRecord` when it is usable, else a
    :class:`Rejected` with the first reason that applies, checked in this order:

    1. it could not be read as a text (unparseable JSON, no text field, not a string);
    2. its domain is in ``exclude_domains`` (the held-out-only domains, for every training source);
    3. :func:`check_text` refuses it (not UTF-8, empty, outside the source's word window, a word
       over ``MAX_WORD_CHARS``);
    4. it is markup or not prose (under 75 % letters: emoji, digits, tables, commands);
    5. its id is in ``exclude_ids`` (texts held out of this source);
    6. its normalised text came earlier in the source (a duplicate).

    ``limit`` counts the usable records: reading stops after the ``limit``-th.
    """
    seen: set[str] = set()
    count = 0
    excluded, excluded_ids = frozenset(exclude_domains), frozenset(exclude_ids)
    for record in READERS[source.kind](source):
        if record.unreadable is not None:
            yield Rejected(record, record.unreadable)
            continue
        if record.domain in excluded:
            yield Rejected(record, Refusal(Reason.HELDOUT_ONLY_DOMAIN, record.domain))
            continue
        try:
            text = check_text(record.value, source.min_words, source.max_words)
        except TextRejected as e:
            yield Rejected(record, e.refusal)
            continue
        refusal = _unspeakable(text)
        if refusal is not None:
            yield Rejected(record, refusal)
            continue
        tid = text_id(text)
        if tid in excluded_ids:
            yield Rejected(record, Refusal(Reason.HELDOUT_TEXT))
            continue
        if tid in seen:
            yield Rejected(record, Refusal(Reason.DUPLICATE))
            continue
        seen.add(tid)
        yield TextRecord(tid, text, record.domain, record.origin, record.value)
        count += 1
        if source.limit is not None and count >= source.limit:
            return


def read_texts(source: TextSource, exclude_domains: Collection[str] = ()) -> Iterator[TextRecord]:
    """The usable records of :func:`screen_texts`, for choosing texts (held-out sets, pools): normalised
    prose that fits the source's word window, in order, without duplicates, none of ``exclude_domains``.
    The pipelines that must account for every record read :func:`screen_texts` itself."""
    for record in screen_texts(source, exclude_domains):
        if isinstance(record, TextRecord):
            yield record


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
