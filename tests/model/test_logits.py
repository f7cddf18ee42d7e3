"""One hidden-to-logits map for student and teacher, the model's own (soft-capping included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from salad_ray.batch import Sample, collate
from salad_ray.losses import kl_full
from salad_ray.model.encoders import build_encoder
from salad_ray.model.logits import check_logits, output_logits
from salad_ray.model.student import SpeechLM
from salad_ray.objective import batch_gap
from salad_ray.teacher.backends import TransformersBackend


def tiny_gemma2() -> Gemma2ForCausalLM:
    """A random Gemma-2 whose logits are large enough for its soft-capping (at 3) to bite."""
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=3.0,
        initializer_range=0.3,
        attn_implementation="eager",
    )
    return Gemma2ForCausalLM(config).eval()


def test_untrained_student_on_a_soft_capped_llm_is_its_teacher(tmp_path, smoke_config, tokenizer):
    llm = tiny_gemma2()
    llm.save_pretrained(tmp_path / "gemma2")
    student = SpeechLM(smoke_config.models, build_encoder(smoke_config.models.encoder), llm, tokenizer).eval()
    ids = [[2, 17, 301, 45, 9, 88, 412, 3, 7, 120], [2, 5, 6, 7, 8]]
    batch = collate([Sample(f"s{n}", seq, []) for n, seq in enumerate(ids)])
    with torch.no_grad():
        logits, rows = student(batch, "text")
        own = [llm(input_ids=torch.tensor([seq])).logits[0] for seq in ids]
        plain = student._causal_lm().get_output_embeddings()(
            student.text_hidden(batch).flatten(0, 1)[rows.flat]
        )
    expected = torch.stack(
        [own[b][i - 1] for b, i in zip(rows.sample.tolist(), rows.w.tolist(), strict=True)]
    )
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert logits.abs().max() < 3.0 < plain.abs().max()  # the cap is what makes them agree
    assert kl_full(expected, plain).mean() > 1e-3  # without it F would not start at 0

    # F through the real path: the transformers teacher's top-k (all of the vocabulary) on w
    teacher = TransformersBackend(tmp_path / "gemma2", max_k=512, dtype="float32", device="cpu")
    samples = []
    for n, (seq, answer) in enumerate(zip(ids, teacher.topk(ids, 512), strict=True)):
        samples.append(Sample(f"s{n}", seq, [], [], answer.ids, answer.logprobs.astype(np.float32)))
    gap = batch_gap(student, collate(samples))
    assert gap.f_sums.abs().max() < 1e-5


def test_check_logits_refuses_a_forward_it_does_not_reproduce():
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )

    class ScaledLlama(LlamaForCausalLM):  # a family whose forward scales its logits undeclared
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = 2 * out.logits
            return out

    torch.manual_seed(0)
    check_logits(LlamaForCausalLM(config))  # plain z = W_out h
    with pytest.raises(NotImplementedError, match="ScaledLlama"):
        check_logits(ScaledLlama(config))
    gemma = tiny_gemma2()
    check_logits(gemma)
    hidden = torch.randn(3, 32)
    z = gemma.lm_head(hidden)
    torch.testing.assert_close(output_logits(gemma, hidden), 3.0 * torch.tanh(z / 3.0))
