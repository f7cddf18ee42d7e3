"""The data pipeline: texts and recorded speech to Parquet shards with teacher top-k.

records.py   row fields and the shard schema        stages.py    the stage classes (no Ray)
shards.py    atomic shards, quarantine, commits      dataflow.py  the Ray Data graph
"""
