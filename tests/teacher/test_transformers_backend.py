import numpy as np
import pytest
import torch

from salad_ray.teacher.backends import TransformersBackend
from salad_ray.teacher.protocol import TeacherRequestError


@pytest.fixture(scope="module")
def backend(smollm_path):
    return TransformersBackend(smollm_path)


def test_topk_rows_follow_the_protocol(backend, tokenizer):
    seqs = [tokenizer.encode("The capital of France is Paris."), tokenizer.encode("One two three")]
    answers = backend.topk(seqs, 5)
    full = backend.logits(seqs)
    for seq, answer, logits in zip(seqs, answers, full, strict=True):
        assert answer.ids.shape == answer.logprobs.shape == (len(seq), 5)
        assert (answer.ids[0] == -1).all()
        assert (np.diff(answer.logprobs[1:], axis=1) <= 0).all()  # sorted, most likely first
        # row i is the distribution of token i given the tokens before it
        logprobs = torch.log_softmax(logits, -1)
        for i in range(1, len(seq)):
            assert answer.ids[i, 0] == int(logprobs[i - 1].argmax())
            assert answer.logprobs[i, 0] == pytest.approx(float(logprobs[i - 1].max()), abs=1e-5)
    paris = tokenizer.encode(" Paris", add_special_tokens=False)[0]
    assert answers[0].ids[len(seqs[0]) - 2, 0] == paris  # "... France is" -> " Paris"


def test_batching_does_not_change_answers(backend, tokenizer):
    a, b = tokenizer.encode("short"), tokenizer.encode("a much longer sequence of several words here")
    together = backend.topk([a, b], 4)
    alone = backend.topk([a], 4)[0]
    np.testing.assert_array_equal(together[0].ids, alone.ids)
    np.testing.assert_allclose(together[0].logprobs, alone.logprobs, atol=1e-4)


def test_bad_request_is_refused(backend):
    with pytest.raises(TeacherRequestError, match="outside the vocabulary"):
        backend.topk([[1, 10**6]], 4)
