"""A store of Parquet shards with a quarantine and a commit log: exactly-once output.

    root/
      shards/<hash>.parquet        samples (records.SHARD_SCHEMA)
      quarantine/<hash>.parquet    refused records and why (records.QUARANTINE_SCHEMA)
      commits/<n>.json             what each finished pipeline run committed: {file: [sample ids]}

Workers write files atomically (a temporary name renamed into place) and name them by a hash of the
sample ids they hold, so a retried task rewrites the same file. Only the driver commits: after a run
it records the files the run *returned* (a task that died after writing returned nothing) and
deletes every file no commit names. Readers see committed files only, so every sample id is in at
most one committed file and nothing accepted is lost or delivered twice. One pipeline run writes to
a store at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from salad_ray.batch import Sample
from salad_ray.files import write_bytes
from salad_ray.pipeline.records import QUARANTINE_RENAMED, QUARANTINE_SCHEMA, SHARD_SCHEMA, sample_from_row

KINDS = ("shards", "quarantine")


class ShardStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def dir(self, kind: str) -> Path:
        assert kind in KINDS, kind
        return self.root / kind

    # ------------------------------------------------------------------------------------ writing

    def write(self, table: pa.Table, kind: str) -> str:
        """Write one table atomically; returns its file name (a hash of the sample ids it holds)."""
        schema = SHARD_SCHEMA if kind == "shards" else QUARANTINE_SCHEMA
        if table.schema != schema:
            raise ValueError(f"{kind} table schema differs from the store's:\n{table.schema}")
        ids = sorted(table.column("sample_id").to_pylist())
        name = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24] + ".parquet"
        directory = self.dir(kind)
        directory.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_bytes(directory / name, sink.getvalue().to_pybytes())
        return name

    def commit(self, entries: Iterable[tuple[str, str, str]]) -> dict[str, int]:
        """Record (kind, file, sample_id) rows returned by a run; drop files no commit names.

        Raises ValueError if a sample id would be committed twice (in this run or an earlier one).
        Returns the number of newly committed ids per kind.
        """
        files: dict[str, dict[str, list[str]]] = {k: {} for k in KINDS}
        for kind, file, sample_id in entries:
            files[kind].setdefault(file, []).append(sample_id)
        counts = Counter(sid for kind in KINDS for ids in files[kind].values() for sid in ids)
        done = self.done_ids()
        again = sorted(s for s, n in counts.items() if n > 1 or s in done)
        if again:
            raise ValueError(f"{len(again)} sample ids would be committed twice, e.g. {again[:3]}")
        commits = self.root / "commits"
        commits.mkdir(parents=True, exist_ok=True)
        if counts:
            number = len(list(commits.glob("*.json")))
            write_bytes(commits / f"{number:06d}.json", json.dumps(files).encode())
        self._remove_orphans()
        return {kind: sum(len(ids) for ids in files[kind].values()) for kind in KINDS}

    def _remove_orphans(self) -> None:
        committed = {kind: set(self._committed(kind)) for kind in KINDS}
        for kind in KINDS:
            directory = self.dir(kind)
            if directory.is_dir():
                for path in directory.iterdir():
                    if path.name not in committed[kind]:
                        path.unlink()

    # ------------------------------------------------------------------------------------ reading

    def _commits(self) -> Iterator[dict[str, dict[str, list[str]]]]:
        for path in sorted((self.root / "commits").glob("*.json")):
            yield json.loads(path.read_text())

    def _committed(self, kind: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for commit in self._commits():
            out.update(commit.get(kind, {}))
        return out

    def ids(self, kind: str) -> list[str]:
        return [sid for ids in self._committed(kind).values() for sid in ids]

    def done_ids(self) -> set[str]:
        """Every sample id committed, as a sample or in the quarantine."""
        return {sid for kind in KINDS for sid in self.ids(kind)}

    def files(self, kind: str = "shards") -> list[Path]:
        return [self.dir(kind) / name for name in sorted(self._committed(kind))]

    def table(self, kind: str = "shards", columns: list[str] | None = None) -> pa.Table:
        schema = SHARD_SCHEMA if kind == "shards" else QUARANTINE_SCHEMA
        if columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])
        renamed = QUARANTINE_RENAMED if kind == "quarantine" else {}
        # cast: shards written before teacher log-probs were stored as float16 read as today's
        tables = [_read(f, columns, renamed).cast(schema) for f in self.files(kind)]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def seconds(self) -> float:
        """Seconds of speech in the committed samples."""
        return float(self.table(columns=["duration"]).column("duration").to_numpy().sum())

    def samples(self) -> Iterator[Sample]:
        """Every committed sample, decoded."""
        for path in self.files("shards"):
            for row in pq.read_table(path).to_pylist():
                yield sample_from_row(row)


def _read(path: Path, columns: list[str] | None, renamed: dict[str, str]) -> pa.Table:
    """A Parquet file's ``columns`` (all when None); a column today named ``new`` that the file holds
    under its former name ``renamed[new]`` is read from that and given today's name."""
    held = set(pq.read_schema(path).names)
    old_names = {new: old for new, old in renamed.items() if new not in held and old in held}
    wanted = None if columns is None else [old_names.get(c, c) for c in columns]
    table = pq.read_table(path, columns=wanted)
    today = {old: new for new, old in old_names.items()}
    return table.rename_columns([today.get(n, n) for n in table.column_names])
