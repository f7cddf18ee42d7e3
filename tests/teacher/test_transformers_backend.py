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


def test_prompt_scores_hold_each_positions_own_token_and_its_rank(backend, tokenizer):
    seq = tokenizer.encode("The capital of France is Paris, and the quick brown fox jumps.")
    scores = backend.prompt_scores([seq], 5)[0]
    logprobs = torch.log_softmax(backend.logits([seq])[0], -1)
    assert scores.token_ranks[0] == 0 and scores.token_logprobs[0] == 0
    for i in range(1, len(seq)):
        order = logprobs[i - 1].argsort(descending=True).tolist()
        assert scores.token_ranks[i] == order.index(seq[i]) + 1  # 1 + the tokens more likely
        assert scores.token_logprobs[i] == pytest.approx(float(logprobs[i - 1, seq[i]]), abs=1e-5)
        if scores.token_ranks[i] <= 5:  # inside the top-k: the same token at that rank
            assert scores.topk.ids[i, scores.token_ranks[i] - 1] == seq[i]
    assert (scores.token_ranks[1:] > 5).any()  # some own tokens lie outside the top-5


def test_the_context_is_the_models_own(backend):
    assert backend.limits.max_model_len == backend.model.config.max_position_embeddings
    assert backend.limits.max_len == backend.limits.max_model_len - 1
