import pytest
import torch

from salad_ray.config import AdapterConfig
from salad_ray.model.adapter import Adapter, stack_frames


def test_stack_frames_concatenates_and_pads():
    x = torch.arange(10.0).view(1, 5, 2)  # frames [0,1] [2,3] [4,5] [6,7] [8,9]
    y = stack_frames(x, 2)
    assert y.shape == (1, 3, 4)
    assert y[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]


def test_adapter_is_causal_and_batches_exactly():
    torch.manual_seed(0)
    adapter = Adapter(
        in_dim=6, out_dim=10, stack=2, config=AdapterConfig(layers=2, d_model=16, mlp=32, heads=4, kv_heads=2)
    ).eval()
    x = torch.randn(1, 12, 6)
    y = adapter(x)
    assert y.shape == (1, 6, 10) and adapter.frames(12) == 6 and adapter.frames(13) == 7
    x2 = x.clone()
    x2[:, 8:] = torch.randn(1, 4, 6)  # change frames 8.. (adapter steps 4..)
    torch.testing.assert_close(adapter(x2)[:, :4], y[:, :4])  # earlier steps do not see them
    assert not torch.allclose(adapter(x2)[:, 4:], y[:, 4:])
    # right padding (zeros) in a batch leaves a shorter span's outputs unchanged
    short = x[:, :7]
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 5)), x])
    torch.testing.assert_close(adapter(batch)[0, : adapter.frames(7)], adapter(short)[0])


def test_paper_adapter_has_about_122m_parameters():
    # The paper: 12 layers, d=960, MLP 2560, 15 heads, 5 KV heads, ~122M parameters,
    # here between Mimi (512-d latents) and Qwen2.5-3B (2048-d embeddings).
    adapter = Adapter(in_dim=512, out_dim=2048, stack=1, config=AdapterConfig())
    n = sum(p.numel() for p in adapter.parameters())
    assert n == pytest.approx(122e6, rel=0.05)
