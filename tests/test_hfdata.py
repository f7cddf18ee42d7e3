"""Hugging Face sources opened one way: saved directories, and builders streamed from data_files in
the layouts of the paper's corpora (FineWeb-Edu Parquet, Emilia webdataset tars), without Ray."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from salad_ray.config import SpeechSource, TextSource
from salad_ray.corpus import RawText, read_texts
from salad_ray.hfdata import get_field, is_saved, open_dataset, with_next_transcript
from salad_ray.preflight import data_problems


def test_a_dotted_field_reads_nested_records_and_a_missing_one_is_named():
    record = {"json": {"text": "hello", "speaker": "EN_B0_S0"}, "a.b": 1}
    assert get_field(record, "json.text") == "hello"
    assert get_field(record, "a.b") == 1
    with pytest.raises(KeyError, match=r"json\.txt.*'txt' is not among \['speaker', 'text'\]"):
        get_field(record, "json.txt")


def test_consecutive_segments_of_one_group_become_utterance_and_continuation():
    segments = [
        {"text": "one", "book": "a"},
        {"text": "two", "book": "a"},
        {"text": "three", "book": "b"},
        {"text": "no book"},
        {"text": "four", "book": "b"},
    ]
    paired = list(with_next_transcript(segments, "text", "book", "next"))
    assert [(r["text"], r["next"]) for r in paired] == [
        ("one", "two"),
        ("two", ""),
        ("three", ""),
        ("no book", ""),
        ("four", ""),
    ]


def _fineweb_edu(tmp_path, rows: int = 6):
    """Parquet shards with FineWeb-Edu's columns (text, id, url, score, ...)."""
    folder = tmp_path / "fineweb-edu" / "sample" / "10BT"
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(
        [
            {
                "text": f"Document {n} explains how rivers carve valleys over many thousands of years.",
                "id": f"<urn:uuid:{n}>",
                "url": f"https://example.org/{n}",
                "score": 3.1,
                "int_score": 3,
                "language": "en",
            }
            for n in range(rows)
        ]
    )
    pq.write_table(table, folder / "000_00000.parquet")
    return folder


def test_a_fineweb_edu_layout_streams_through_the_parquet_builder(tmp_path):
    folder = _fineweb_edu(tmp_path)
    source = TextSource(kind="hf", path="parquet", data_files=str(folder / "*.parquet"), min_words=5)
    assert not is_saved(source)
    records = list(read_texts(source))
    assert len(records) == 6 and records[0].text.startswith("Document 0")


def test_a_row_without_the_text_field_is_refused_not_skipped(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"body": "x"}, {"body": "y"}]).save_to_disk(str(tmp_path / "saved"))
    source = TextSource(kind="hf", path=str(tmp_path / "saved"))
    assert is_saved(source)
    from salad_ray.corpus import _read_hf

    raw: list[RawText] = list(_read_hf(source))
    assert [r.unreadable.detail for r in raw if r.unreadable] == ["'text'", "'text'"]


def _emilia_tar(tool, path, segments: list[tuple[str, str]]) -> None:
    """Emilia's layout: <key>.mp3 beside <key>.json with text and speaker (the audio is not decoded here)."""
    samples = []
    for n, (speaker, text) in enumerate(segments):
        key = f"{speaker}_W{n:06d}"
        meta = {"id": key, "text": text, "speaker": speaker, "duration": 1.0}
        samples.append((key, {"mp3": b"ID3 not really audio", "json": json.dumps(meta).encode()}))
    tool.webdataset_shard(path, samples)


def test_an_emilia_layout_streams_with_its_audio_left_encoded(tmp_path, rehearsal_tool):
    _emilia_tar(
        rehearsal_tool,
        tmp_path / "EN-B000000.tar",
        [("EN_B00000_S00000", "hello there"), ("EN_B00000_S00000", "again")],
    )
    source = SpeechSource(
        kind="hf",
        path="webdataset",
        data_files=str(tmp_path / "*.tar"),
        audio_field="mp3",
        text_field="json.text",
        continuation_group_field="json.speaker",
    )
    first = next(iter(open_dataset(source, audio_fields=("mp3",))))
    assert first["mp3"]["bytes"] == b"ID3 not really audio"
    assert first["json"]["text"] == "hello there"


def test_preflight_names_a_nested_field_the_speech_source_lacks(smoke_config, tmp_path, rehearsal_tool):
    _emilia_tar(rehearsal_tool, tmp_path / "EN-B000000.tar", [("EN_B00000_S00000", "hello there")])
    natural = SpeechSource(
        kind="hf",
        path="webdataset",
        data_files=str(tmp_path / "*.tar"),
        audio_field="mp3",
        text_field="json.transcript",
        continuation_group_field="json.speaker",
    )
    data = smoke_config.data.model_copy(update={"natural": [natural]})
    problems = {p.key: p.message for p in data_problems(smoke_config.model_copy(update={"data": data}))}
    assert "'json.transcript' is not a field" in problems["data.natural[0].text_field"]
    assert "data.natural[0].continuation_group_field" not in problems


def test_a_speech_source_takes_one_kind_of_continuation():
    with pytest.raises(ValueError, match="not both"):
        SpeechSource(kind="hf", path="x", continuation_field="next", continuation_group_field="book")


def test_the_readmes_local_copy_sources_validate():
    """The README's `Using your own data` block is a valid data configuration."""
    import re
    from pathlib import Path

    import yaml

    from salad_ray.config import DataConfig

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Using your own data", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    data = DataConfig.model_validate(yaml.safe_load(block)["data"])
    assert [s.continuation_group_field for s in data.natural] == ["json.speaker", "book_id", None]
