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
