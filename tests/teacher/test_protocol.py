import numpy as np
import pytest

from salad_ray.teacher.protocol import Limits, TeacherRequestError, TopK, validate_request

LIMITS = Limits(vocab_size=100, max_len=8, max_k=20)


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
        ([list(range(9))], 5, "9 tokens; the context is 8"),
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
    from salad_ray.teacher.protocol import from_prompt_logprobs

    rows = [None, {7: -3.0, 1: -0.5, 2: -1.0}, {3: -0.1, 4: -2.5}]  # 7: the actual token, outside the top-2
    answer = from_prompt_logprobs(rows, 2)
    assert answer.ids.tolist() == [[-1, -1], [1, 2], [3, 4]]
    np.testing.assert_allclose(answer.logprobs[1:], [[-0.5, -1.0], [-0.1, -2.5]])
    with pytest.raises(ValueError, match="fewer than k=3"):
        from_prompt_logprobs(rows, 3)
    with pytest.raises(ValueError, match="start with None"):
        from_prompt_logprobs([{1: -1.0}], 1)


def test_http_form_round_trips():
    from salad_ray.teacher.protocol import (
        completion_request,
        completion_response,
        parse_completion_request,
        parse_completion_response,
    )

    answers = [
        TopK.from_rows(np.array([[5, 6], [7, 8]]), np.array([[-0.2, -1.9], [-0.4, -1.2]])),
        TopK.from_rows(np.zeros((0, 2), int), np.zeros((0, 2))),
    ]
    back = parse_completion_response(completion_response(answers, "m"), 2)
    for a, b in zip(answers, back, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-7)
    assert parse_completion_request(completion_request([[1, 2], [3]], 4, "m")) == ([[1, 2], [3]], 4)
    assert parse_completion_request({"prompt": [1, 2], "prompt_logprobs": 3}) == ([[1, 2]], 3)
    with pytest.raises(TeacherRequestError, match="text is not accepted"):
        parse_completion_request({"prompt": "hello", "prompt_logprobs": 3})
    with pytest.raises(TeacherRequestError, match="prompt_logprobs"):
        parse_completion_request({"prompt": [1]})
