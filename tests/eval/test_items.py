import json

import pytest

from salad_ray.config import BenchmarkSpec
from salad_ray.eval.items import HF_TASKS, Item, load_items, shots_for

CLOZE = BenchmarkSpec(name="cloze", kind="fortune-cloze", categories=["literature", "wisdom"], limit=40)


def test_fortune_cloze_is_deterministic_and_well_formed():
    items = load_items(CLOZE)
    assert len(items) == 40 and items == load_items(CLOZE)
    assert len({i.item_id for i in items}) == 40
    for item in items:
        assert len(item.options) == 4 and len(set(item.options)) == 4
        assert " -- " not in item.context + item.options[item.answer]  # attributions are removed
        # the right option is the true ending: 3+ words, about a quarter of the fortune
        n_context, n_ending = len(item.context.split()), len(item.options[item.answer].split())
        assert n_ending >= 3 and abs(n_ending - (n_context + n_ending) / 4) <= 1
    positions = [i.answer for i in items]
    assert len(set(positions)) == 4  # the right answer is not always in the same place
    shots = shots_for(items, 3, 5, seed=0)
    assert len(shots) == 5 and items[3] not in shots and shots == shots_for(items, 3, 5, seed=0)


def test_jsonl_items_and_clear_errors(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(
        json.dumps({"id": "a", "context": "The sun rises in the", "options": ["east.", "west."], "answer": 0})
        + "\n\n"
        + json.dumps({"context": "Water  is", "options": ["wet", "dry"], "answer": 1})
        + "\n"
    )
    items = load_items(BenchmarkSpec(name="mine", kind="jsonl", path=str(path)))
    assert items[0] == Item("a", "mine", "The sun rises in the", ("east.", "west."), 0)
    assert items[1].context == "Water is" and items[1].answer == 1 and len(items[1].item_id) == 16
    path.write_text('{"context": "x", "options": ["a", "b"]}\n')
    with pytest.raises(ValueError, match=r"bench.jsonl:1: not an item"):
        load_items(BenchmarkSpec(name="mine", kind="jsonl", path=str(path)))
    path.write_text('{"context": "x", "options": ["a", "b"], "answer": 2}\n')
    with pytest.raises(ValueError, match="answer 2 is not an option index"):
        load_items(BenchmarkSpec(name="mine", kind="jsonl", path=str(path)))


# One row in each dataset's own format (as published on the Hugging Face hub).
HF_ROWS = {
    "storycloze": (
        {
            "input_sentence_1": "Tom was hungry.",
            "input_sentence_2": "He opened the fridge.",
            "input_sentence_3": "It was empty.",
            "input_sentence_4": "He went to the store.",
            "sentence_quiz1": "He bought food.",
            "sentence_quiz2": "He flew to Mars.",
            "answer_right_ending": 1,
        },
        0,
    ),
    "mmsu": ({"question": "2 + 2 =", "options": ["3", "4", "5"], "answer_index": 1, "category": "math"}, 1),
    "openbookqa": (
        {
            "question_stem": "The sun is a",
            "choices": {"text": ["planet", "star"], "label": ["A", "B"]},
            "answerKey": "B",
        },
        1,
    ),
    "hellaswag": (
        {
            "activity_label": "Baking",
            "ctx": "She puts the cake",
            "endings": ["in the oven.", "on Mars."],
            "label": "0",
        },
        0,
    ),
    "arc-challenge": (
        {
            "question": "What melts ice?",
            "choices": {"text": ["heat", "cold", "dark"], "label": ["1", "2", "3"]},
            "answerKey": "1",
        },
        0,
    ),
    "piqa": ({"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Sing to it.", "label": 0}, 0),
}


@pytest.mark.parametrize("kind", sorted(HF_TASKS))
def test_hf_row_formats(kind):
    row, answer = HF_ROWS[kind]
    context, options, index = HF_TASKS[kind].row(row)
    assert index == answer and context and len(options) >= 2
    Item("x", kind, context, tuple(options), index)  # a valid item


def test_unreachable_hf_dataset_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = BenchmarkSpec(name="arc", kind="arc-challenge", path="no-such-org/no-such-dataset")
    with pytest.raises(RuntimeError, match="save_to_disk"):
        load_items(spec)
