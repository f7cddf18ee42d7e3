import numpy as np
import pytest

from salad_ray.teacher.protocol import (
    Entry,
    Limits,
    PromptScores,
    TeacherRequestError,
    TopK,
    UnknownModelError,
    check_model,
    completion_request,
    completion_response,
    error_body,
    model_list,
    parse_completion_request,
    parse_completion_response,
    scores_from_rows,
    to_prompt_logprobs,
    topk_from_rows,
    validate_request,
)

LIMITS = Limits(vocab_size=100, max_model_len=9, max_k=20)


def test_row_zero_holds_no_prediction():
    answer = TopK.from_rows(np.array([[3, 4], [5, 6]]), np.array([[-0.1, -2.0], [-0.5, -1.0]]))
    assert answer.ids.shape == (3, 2) and answer.ids[0].tolist() == [-1, -1]
    assert answer.logprobs[0].tolist() == [0.0, 0.0] and answer.ids.dtype == np.int64


@pytest.mark.parametrize(
    ("sequences", "k", "message"),
    [
        ([], 5, "no sequences"),
        ([[1, 2], []], 5, "sequence 1 is empty"),
        ([[1, 2, 100]], 5, r"sequence 0 has token ids outside the vocabulary \[0, 100\): \[100\]"),
        ([[-3]], 5, "outside the vocabulary"),
        ([list(range(9))], 5, "9 tokens; the longest prompt is 8 .the model's context of 9"),
        ([[1]], 21, "k=21 is larger than this teacher allows"),
        ([[1]], 0, "positive integer"),
    ],
)
def test_bad_requests_are_named(sequences, k, message):
    with pytest.raises(TeacherRequestError, match=message):
        validate_request(sequences, k, LIMITS)


def test_good_request_passes():
    validate_request([[0, 1, 99], [5]], 20, LIMITS)


def test_vllm_rows_keep_the_top_k_and_drop_the_extra_actual_token():
    # vLLM's order: the sequence's own token first (7: outside the top-2), then the top-k by rank
    rows = [
        None,
        {7: Entry(-3.0, 9), 1: Entry(-0.5, 1), 2: Entry(-1.0, 2)},
        {3: Entry(-0.1, 1), 4: Entry(-2.5, 2)},
    ]
    answer = topk_from_rows(rows, 2)
    assert answer.ids.tolist() == [[-1, -1], [1, 2], [3, 4]]
    np.testing.assert_allclose(answer.logprobs[1:], [[-0.5, -1.0], [-0.1, -2.5]])
    with pytest.raises(ValueError, match="fewer than k=3"):
        topk_from_rows(rows, 3)
    with pytest.raises(ValueError, match="start with None"):
        topk_from_rows([{1: Entry(-1.0, 1)}], 1)


def test_an_own_token_tied_with_the_kth_does_not_displace_it():
    rows = [None, {7: Entry(-1.0, 2), 1: Entry(-0.5, 1), 2: Entry(-1.0, 2)}]
    assert topk_from_rows(rows, 2).ids[1].tolist() == [1, 2]


def test_scores_keep_the_own_token_and_its_rank():
    rows = [
        None,
        {7: Entry(-3.0, 9), 1: Entry(-0.5, 1), 2: Entry(-1.0, 2)},
        {3: Entry(-0.1, 1), 4: Entry(-2.5, 2)},
    ]
    scores = scores_from_rows(rows, [5, 7, 3], 2)
    assert scores.token_ranks.tolist() == [0, 9, 1]
    np.testing.assert_allclose(scores.token_logprobs, [0.0, -3.0, -0.1])
    assert scores.first(1).topk.ids.tolist() == [[-1], [1], [3]]
    with pytest.raises(ValueError, match="no entry for the sequence's own token"):
        scores_from_rows(rows, [5, 8, 3], 2)
    with pytest.raises(ValueError, match="3 rows of prompt log-probs for a sequence of 2"):
        scores_from_rows(rows, [5, 7], 2)


def scores_of(ids, logprobs, own_logprobs, own_ranks):
    return PromptScores.from_rows(
        np.array(ids), np.array(logprobs), np.array(own_logprobs), np.array(own_ranks)
    )


def test_json_rows_are_vllms():
    """Own token first with its rank, then the top-k by rank; every entry decoded; -inf as -9999."""
    scores = scores_of([[5, 6], [7, 8]], [[-0.2, -1.9], [-0.4, -1.2]], [-4.0, -0.4], [12, 1])
    rows = to_prompt_logprobs(scores, [5, 9, 7], lambda t: f"<{t}>")
    assert rows[0] is None
    assert list(rows[1]) == ["9", "5", "6"]
    assert rows[1]["9"] == {"logprob": -4.0, "rank": 12, "decoded_token": "<9>"}
    assert rows[1]["5"]["rank"] == 1 and rows[1]["6"]["rank"] == 2
    assert list(rows[2]) == ["7", "8"]  # the own token is the top-1: one entry
    assert rows[2]["7"] == {"logprob": pytest.approx(-0.4), "rank": 1, "decoded_token": "<7>"}
    infinite = PromptScores(scores.topk, np.array([0.0, -np.inf, -0.4], np.float32), scores.token_ranks)
    assert to_prompt_logprobs(infinite, [5, 9, 7], str)[1]["9"]["logprob"] == -9999.0


def test_http_form_round_trips():
    sequences = [[5, 9, 7], [3]]
    answers = [
        scores_of([[5, 6], [7, 8]], [[-0.2, -1.9], [-0.4, -1.2]], [-4.0, -0.4], [12, 1]),
        scores_of(np.zeros((0, 2), int), np.zeros((0, 2)), [], []),
    ]
    request = parse_completion_request(completion_request(sequences, 2, "m"))
    assert (request.sequences, request.k, request.model, request.return_token_ids) == (
        sequences,
        2,
        "m",
        False,
    )
    body = completion_response(answers, request, "m", str)
    assert body["object"] == "text_completion" and body["model"] == "m" and body["id"].startswith("cmpl-")
    assert body["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 4,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }
    assert [c["prompt_token_ids"] for c in body["choices"]] == [None, None]
    back = parse_completion_response(body, 2)
    for a, b in zip(answers, back, strict=True):
        np.testing.assert_array_equal(a.topk.ids, b.ids)
        np.testing.assert_allclose(a.topk.logprobs, b.logprobs, atol=1e-7)
    with_ids = parse_completion_request({"prompt": sequences, "prompt_logprobs": 2, "return_token_ids": True})
    assert [
        c["prompt_token_ids"] for c in completion_response(answers, with_ids, "m", str)["choices"]
    ] == sequences


def test_request_parsing():
    request = parse_completion_request({"prompt": [1, 2], "prompt_logprobs": 3})
    assert (request.sequences, request.k, request.model) == ([[1, 2]], 3, None)
    with pytest.raises(TeacherRequestError, match="text is not accepted"):
        parse_completion_request({"prompt": "hello", "prompt_logprobs": 3})
    with pytest.raises(TeacherRequestError, match="prompt_logprobs"):
        parse_completion_request({"prompt": [1]})
    with pytest.raises(TeacherRequestError, match="model must be a string"):
        parse_completion_request({"prompt": [1], "prompt_logprobs": 1, "model": 3})


def test_an_unknown_model_is_a_404_in_vllms_error_shape():
    check_model(None, "m")
    check_model("", "m")
    check_model("m", "m")
    with pytest.raises(UnknownModelError, match="The model `other` does not exist") as e:
        check_model("other", "m")
    assert e.value.status == 404
    assert error_body(e.value) == {
        "error": {"message": str(e.value), "type": "NotFoundError", "param": "model", "code": 404}
    }
    assert error_body(TeacherRequestError("bad"))["error"] == {
        "message": "bad",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


def test_models_list_the_models_own_context():
    card = model_list("m", Limits(vocab_size=100, max_model_len=8192, max_k=20))["data"][0]
    assert (card["id"], card["object"], card["max_model_len"]) == ("m", "model", 8192)
