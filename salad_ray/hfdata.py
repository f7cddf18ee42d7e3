"""Hugging Face datasets as sources, opened one way for text and for speech.

A source's ``path`` is a local ``save_to_disk`` directory, a hub dataset id, or a builder such as
``parquet`` or ``webdataset`` with ``data_files``; ``name`` is the dataset's configuration
(FineWeb-Edu's ``sample-10BT``) and ``data_files`` the files it reads (Emilia's
``Emilia-YODAS/EN/*.tar``). Anything that is not a saved directory is streamed: a run reads the
records it uses, never the whole dataset. Audio stays encoded, as a plain ``{"bytes", "path"}``
record rather than an ``Audio`` feature: the pipeline decodes it itself, and ``datasets`` then needs
no audio backend (its ``Audio`` feature imports torchcodec even to pass bytes through).

A field is a column name or a dotted path into nested records: ``json.text`` is the transcript in the
JSON part of an Emilia webdataset sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import datasets


class HFLocation(Protocol):
    """The fields of a source that say where its Hugging Face dataset is."""

    path: str | None
    name: str | None
    data_files: str | list[str] | None
    split: str


def is_saved(source: HFLocation) -> bool:
    """Whether the source is a local ``save_to_disk`` directory (read in place, not streamed)."""
    return Path(str(source.path)).is_dir() and any(
        (Path(str(source.path)) / f).exists()
        for f in ("dataset_info.json", "dataset_dict.json", "state.json")
    )


def open_dataset(
    source: HFLocation, audio_fields: tuple[str, ...] = ()
) -> datasets.Dataset | datasets.IterableDataset:
    """The source's split: a :class:`datasets.Dataset` for a saved directory, else a streamed
    :class:`datasets.IterableDataset`; the top-level columns of ``audio_fields`` left encoded."""
    import datasets

    if is_saved(source):
        data = datasets.load_from_disk(str(source.path))
        if isinstance(data, datasets.DatasetDict):
            data = data[source.split]
    else:
        data = datasets.load_dataset(
            source.path, source.name, data_files=source.data_files, split=source.split, streaming=True
        )
    features = data.features or {}
    for column in {f.split(".")[0] for f in audio_fields}:
        if isinstance(features.get(column), datasets.Audio):
            encoded = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
            data = data.cast_column(column, encoded)
    return data


def get_field(record: Mapping[str, Any], path: str) -> Any:
    """``record[a][b]`` for ``path = "a.b"``; a column name with a dot in it is read as it is.
    Raises KeyError naming the path and the keys that are there."""
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            keys = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise KeyError(f"no field {path!r} ({part!r} is not among {keys})")
        value = value[part]
    return value


def has_field(record: Mapping[str, Any], path: str) -> bool:
    try:
        get_field(record, path)
    except KeyError:
        return False
    return True


def with_next_transcript(
    records: Iterable[Mapping[str, Any]], text_field: str, group_field: str, into: str
) -> Iterator[dict[str, Any]]:
    """Each record with ``into`` set to the transcript of the record after it when both belong to the
    same group (the next segment of one book or one speaker's video), else "" (a string in every
    record, so every batch has one schema). Records are read in order, one ahead: a corpus of
    consecutive segments becomes utterances with their continuations."""
    held: dict[str, Any] | None = None
    for record in records:
        if held is not None:
            group = get_field(held, group_field)
            same = has_field(record, group_field) and get_field(record, group_field) == group
            follows = same and has_field(record, text_field)
            yield {**held, into: get_field(record, text_field) if follows else ""}
        held = dict(record) if has_field(record, group_field) else None
        if held is None:
            yield {**record, into: ""}
    if held is not None:
        yield {**held, into: ""}
