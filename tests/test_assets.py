import json

import pytest
import torch
from safetensors.torch import load_file

from salad_ray.assets import ASSETS, AssetError, fetch_asset, main, resolve
from salad_ray.config import ModelRef


def test_local_directory_is_used_as_is(tmp_path):
    assert resolve(str(tmp_path)) == tmp_path
    with pytest.raises(AssetError, match="not a directory"):
        resolve(str(tmp_path / "missing"))


def test_offline_assets_are_real_models(smollm_path):
    config = json.loads((smollm_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config  # de-quantised, a plain checkpoint
    assert (resolve("asset:whisper-tiny-ct2") / "model.bin").is_file()
    assert (resolve("asset:all-minilm-l6-v2") / "modules.json").is_file()


def test_unknown_asset_and_unreachable_hub():
    with pytest.raises(AssetError, match="unknown asset 'nope'"):
        resolve("asset:nope")
    # HF_HUB_OFFLINE=1 in tests: a hub id fails at once, and the error says how to pass a path
    with pytest.raises(AssetError, match="pass the directory instead of the id"):
        resolve("someone/some-model-that-is-not-cached")


def test_failed_fetch_says_how_to_supply_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SALAD_RAY_CACHE", str(tmp_path))
    monkeypatch.setenv("SALAD_RAY_INDEX_URL", "http://127.0.0.1:9/simple")
    with pytest.raises(AssetError, match=r"all-minilm-l6-v2.*Supply the model by path"):
        fetch_asset("all-minilm-l6-v2")
    assert not (tmp_path / "assets" / "all-minilm-l6-v2").exists()  # nothing half-written


def test_random_init_is_seeded_shrunk_and_cached(smollm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("SALAD_RAY_CACHE", str(tmp_path))
    overrides = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
    }
    ref = ModelRef(source=str(smollm_path), random_init=True, overrides=overrides, seed=3)
    a = resolve(ref, "causal-lm")
    assert resolve(ref, "causal-lm") == a  # built once
    config = json.loads((a / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1
    assert (a / "tokenizer.json").is_file()  # the tokenizer of the source comes along
    other = resolve(ref.model_copy(update={"seed": 4}), "causal-lm")
    assert other != a
    wa, wb = load_file(a / "model.safetensors"), load_file(other / "model.safetensors")
    assert not torch.equal(wa["model.embed_tokens.weight"], wb["model.embed_tokens.weight"])
    with pytest.raises(AssetError, match="has no field 'no_such_field'"):
        resolve(
            ModelRef(source=str(smollm_path), random_init=True, overrides={"no_such_field": 1}), "causal-lm"
        )
    with pytest.raises(AssetError, match="cannot be randomly initialised"):
        resolve(ModelRef(source="asset:whisper-tiny-ct2", random_init=True))


def test_cli_lists_assets(capsys):
    main(["list"])
    out = capsys.readouterr().out
    assert all(f"asset:{name}" in out for name in ASSETS)


def _build_on_rank(rank: int, init: str, cache: str, queue) -> None:
    import os

    import torch.distributed as dist

    os.environ["SALAD_RAY_CACHE"] = cache
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        if rank == 1:  # rank 1 builds the cache that every process of the machine then reads
            shrunk = {"d_model": 16, "encoder_attention_heads": 2, "decoder_attention_heads": 2}
            shrunk |= {"encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32}
            ref = ModelRef(random_init=True, overrides=shrunk, seed=3)
            queue.put(sorted(p.name for p in resolve(ref, "whisper").iterdir()))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_random_model_built_by_a_rank_other_than_0_is_saved(tmp_path):
    """transformers' save_pretrained writes on rank 0 only under torch.distributed; the cache of a
    random model is built by whichever rank comes first (a Ray Train worker), so it must not."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_build_on_rank, args=(init, str(tmp_path / "cache"), queue), nprocs=2, join=True)
    assert "model.safetensors" in queue.get()
