"""The adapter's word recognition: the token error rate of the tokens its frames spell under greedy
CTC (salad_ray.model.compress.spelled_tokens, what the LLM's speech positions stand for) against the
tokens each speech span speaks, on a run's spoken stores.

    python tools/token_error.py --student runs/local/students/stage1 \
        --store runs/local/data/natural --store runs/local/data/heldout [--limit 200] [--out FILE]

Prints one JSON line per store (and appends it to ``--out``): the store, the spans and tokens read,
and the token error rate. A store the adapter was trained on against one it was not says how much
of its recognition carries over to new text.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from tqdm import tqdm

from salad_ray.files import append_json_line
from salad_ray.metrics import token_error
from salad_ray.model.student import SpeechLM
from salad_ray.objective import speech_tokens
from salad_ray.pipeline.shards import ShardStore

BATCH = 8  # samples per adapter forward


@torch.no_grad()
def store_token_error(student: SpeechLM, store: Path, limit: int | None) -> dict:
    """The token error of ``student``'s adapter over the first ``limit`` samples of ``store``."""
    samples = list(itertools.islice(ShardStore(store).samples(), limit))
    references, hypotheses = [], []
    for b in tqdm(range(0, len(samples), BATCH), desc=store.name, unit="batch"):
        chunk = samples[b : b + BATCH]
        references += [t for s in chunk for t in speech_tokens(s)]
        hypotheses += student.spelled_tokens([a for s in chunk for a in s.audio])
    return {
        "store": str(store),
        "samples": len(samples),
        "spans": len(references),
        "tokens": sum(len(r) for r in references),
        "token_error": token_error(references, hypotheses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", required=True, help="a saved student directory")
    parser.add_argument("--store", action="append", required=True, help="a shard store of spoken samples")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many samples a store")
    parser.add_argument("--out", default=None, help="a JSON-lines file to append the results to")
    args = parser.parse_args()
    student = SpeechLM.load(args.student).eval()
    for store in args.store:
        result = {"student": args.student, **store_token_error(student, Path(store), args.limit)}
        print(json.dumps(result), flush=True)
        if args.out:
            append_json_line(args.out, result)


if __name__ == "__main__":
    main()
