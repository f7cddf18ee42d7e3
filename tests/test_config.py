import pytest

from salad_ray.config import PRESETS, ConfigError, EncoderKind, load_config, parse_override


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates(name):
    config = load_config(name)
    assert config.preset == name


def test_paper_presets_carry_the_papers_values():
    p3, p7 = load_config("paper-3b"), load_config("paper-7b")
    assert p3.models.llm.source == "Qwen/Qwen2.5-3B" and p7.models.llm.source == "Qwen/Qwen2.5-7B"
    a = p3.models.adapter
    assert (a.layers, a.d_model, a.mlp, a.heads, a.kv_heads) == (12, 960, 2560, 15, 5)
    assert p3.models.encoder.kind == EncoderKind.MIMI
    assert (p3.train.lr_adapter, p3.train.lr_llm) == (1e-3, 5e-5)
    assert (p7.train.lr_adapter, p7.train.lr_llm) == (1e-4, 5e-6)
    for p in (p3, p7):
        assert p.train.weight_decay == 0.1 and p.train.warmup_steps == 500 and p.train.decay_fraction == 0.2
        assert p.selection.clusters == 128 and p.selection.gamma == 5.0
        assert p.distill.alpha == 1.0 and p.interleave.max_tokens == 2048
        assert p.interleave.text_words == (10, 30) and p.interleave.speech_words == (5, 15)
        assert p.tts.voices == ["af_heart"] and p.models.embedder.source == "BAAI/bge-large-en-v1.5"
    # paper-7b extends paper-3b: everything else is shared
    assert p7.models.adapter == p3.models.adapter and p7.selection == p3.selection


def test_local_preset_is_offline():
    config = load_config("local")
    for ref in (config.models.llm, config.models.encoder.model, config.models.asr, config.models.embedder):
        assert ref.source.startswith("asset:")


def test_local_long_is_local_with_a_broader_stand_in_and_a_longer_warm_up():
    local, long = load_config("local").model_dump(), load_config("local-long").model_dump()
    stand_in = long["data"]["natural_standin"]["text"]
    assert (stand_in["kind"], stand_in["categories"], stand_in["limit"]) == ("gcide", None, 4000)
    assert long["stages"]["warmup"]["steps"] == 4 * local["stages"]["warmup"]["steps"]
    for config in (local, long):
        del config["preset"], config["data"]["natural_standin"]["text"], config["stages"]["warmup"]["steps"]
    assert long == local


def test_overrides_are_typed_and_win():
    config = load_config(
        "local", overrides=["train.lr_adapter=1e-4", "selection.gamma=0", "tts.voices=[en-gb]"]
    )
    assert config.train.lr_adapter == 1e-4
    assert config.selection.gamma == 0.0
    assert config.tts.voices == ["en-gb"]


def test_file_layers_between_preset_and_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("preset: smoke\ntrain:\n  batch_size: 3\n  lr_llm: 1.0e-6\n")
    config = load_config(file=f, overrides=["train.batch_size=5"])
    assert config.preset == "smoke"
    assert config.train.batch_size == 5  # --set beats the file
    assert config.train.lr_llm == 1e-6  # the file beats the preset
    assert config.models.llm.random_init  # the rest comes from the smoke preset


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lrr=1", "train.lrr: unknown key"),
        ("train.lr_adapter=-1", "train.lr_adapter"),
        ("models.adapter.heads=7", "models.adapter"),
        ("interleave.speech_words=[9, 3]", "interleave.speech_words"),
        ("nonsense=1", "nonsense: unknown key"),
        ("resources.tts.actors=[2, 1]", "resources.tts.actors"),
        ("resources.tts_actors=[1, 2]", "resources.tts_actors: unknown key"),
    ],
)
def test_bad_keys_and_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        load_config("local", overrides=[override])


def test_bad_preset_and_malformed_override():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_override("train.lr_adapter")
    with pytest.raises(ConfigError, match="is not a section"):
        load_config("local", overrides=["train.lr_adapter.x=1"])


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(file=f)


def test_model_ref_rules():
    with pytest.raises(ConfigError, match="source is required"):
        load_config("local", overrides=["models.llm.source=null"])
    with pytest.raises(ConfigError, match="need random_init"):
        load_config("local", overrides=["models.llm.overrides={hidden_size: 8}"])


def test_yaml_round_trip(tmp_path):
    config = load_config("paper-3b")
    f = tmp_path / "dump.yaml"
    f.write_text(config.to_yaml())
    assert load_config(file=f) == config


def test_local_paths_are_anchored_where_the_config_is_loaded(tmp_path, monkeypatch):
    """Ray Train workers run in their own folder: a relative local path is made absolute when the
    config is loaded, and hub ids, builder names and assets stay as given."""
    (tmp_path / "data" / "llm").mkdir(parents=True)
    (tmp_path / "data" / "a.parquet").touch()
    monkeypatch.chdir(tmp_path)
    config = load_config(
        "smoke",
        overrides=[
            "models.llm.source=data/llm",
            "models.asr.source=Systran/faster-whisper-large-v3",
            'data.text={"kind": "hf", "path": "parquet", "data_files": ["data/*.parquet", "gone/*.parquet"]}',
        ],
    )
    assert config.models.llm.source == str(tmp_path / "data" / "llm")
    assert config.models.asr.source == "Systran/faster-whisper-large-v3"
    assert config.models.embedder.source.startswith("asset:")
    assert config.data.text.path == "parquet"
    assert config.data.text.data_files == [str(tmp_path / "data" / "*.parquet"), "gone/*.parquet"]
    monkeypatch.chdir("/")
    assert load_config(file=_saved(config, tmp_path)).models.llm.source == str(tmp_path / "data" / "llm")


def _saved(config, folder):
    path = folder / "config.yaml"
    path.write_text(config.to_yaml())
    return path
