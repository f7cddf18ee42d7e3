"""The shard store's quarantine read across a column rename (salad_ray.pipeline.shards)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from salad_ray.accounting import Reason
from salad_ray.pipeline.records import QUARANTINE_SCHEMA
from salad_ray.pipeline.shards import ShardStore


def refused(sample_id: str, reason: Reason) -> dict:
    return {
        "sample_id": sample_id,
        "text_id": f"t-{sample_id}",
        "source": "text",
        "origin": "file:1",
        "stage": "read",
        "reason_kind": reason.value,
        "reason": reason.value,
        "text": "x",
        "raw_bytes": None,
    }


def test_a_quarantine_written_before_reason_kind_was_named_reads_as_today(tmp_path):
    store = ShardStore(tmp_path)
    new = store.write(
        pa.Table.from_pylist([refused("a", Reason.EMPTY)], schema=QUARANTINE_SCHEMA), "quarantine"
    )
    old_table = pa.Table.from_pylist([refused("b", Reason.UNPARSEABLE)], schema=QUARANTINE_SCHEMA)
    old_table = old_table.rename_columns(
        ["kind" if n == "reason_kind" else n for n in old_table.column_names]
    )
    pq.write_table(old_table, store.dir("quarantine") / "old.parquet")
    store.commit([("quarantine", new, "a"), ("quarantine", "old.parquet", "b")])

    whole = store.table("quarantine")
    assert whole.schema == QUARANTINE_SCHEMA
    assert dict(zip(*whole.select(["sample_id", "reason_kind"]).to_pydict().values(), strict=True)) == {
        "a": Reason.EMPTY.value,
        "b": Reason.UNPARSEABLE.value,
    }
    assert store.table("quarantine", ["reason_kind"]).num_rows == 2
