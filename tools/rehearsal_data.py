"""Build the `rehearsal` preset's local models and datasets, deterministically, from this machine.

    python tools/rehearsal_data.py [--out runs/rehearsal-data]

Everything is in the format of the paper's source, at toy size, so that the rehearsal runs the code
paths paper-3b runs on a GPU cluster (README, "Rehearsing the paper presets"):

    llm/          a tiny random Qwen2 causal LM (the paper's Qwen2.5 architecture), SmolLM2's tokenizer
    kokoro/       Kokoro-82M's architecture (durations at a trained voice's pace) with seeded random
                  weights and an af_heart voice pack
    asr/          a faster-whisper (CTranslate2) directory, as Systran/faster-whisper-large-v3: tiny.en
    embedder/     a sentence-transformers directory, as BAAI/bge-large-en-v1.5: all-MiniLM-L6-v2
    libriheavy/   save_to_disk with LibriHeavy's fields: audio, text, word_times, book_id
    emilia/EN/    webdataset tars in Emilia-YODAS's layout: <key>.mp3 beside <key>.json
    fineweb-edu/  Parquet in FineWeb-Edu's schema: text, id, url, dump, score, int_score, ...

Speech is espeak-ng speaking Debian fortunes, one word at a time so that word timestamps are exact.
The same --out and seed give the same files; an existing part is left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from salad_ray.audio import SAMPLE_RATE, encode_flac
from salad_ray.config import ModelRef, TextSource
from salad_ray.corpus import read_texts

VOICES = ["en-us", "en-gb", "en-us+f3"]
# Kokoro-82M's architecture (hexgrad/Kokoro-82M's config.json) with a phoneme table of our own: the
# weights are random, so any consistent symbol table will do. One size differs: a phoneme lasts the
# sum of max_dur sigmoids frames, about max_dur / 2 untrained, so Kokoro's 50 would give every phoneme
# ~25 frames (~1.7 s a word, 4x a trained voice's pace and 4x the synthesis); 12 gives ~6, as spoken.
KOKORO_SYMBOLS = (
    ';:,.!?—…"()“” ' + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" + "ˈˌːəɪʊɛæɑɔʌɜθðʃʒŋɹɾʔɐɒɚɝᵻʤʧ"
)
KOKORO_CONFIG = {
    "istftnet": {
        "upsample_kernel_sizes": [20, 12],
        "upsample_rates": [10, 6],
        "gen_istft_hop_size": 5,
        "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "upsample_initial_channel": 512,
    },
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 12,
    "multispeaker": True,
    "n_layer": 3,
    "n_mels": 80,
    "n_token": 178,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 2048,
        "max_position_embeddings": 512,
        "num_hidden_layers": 12,
        "dropout": 0.1,
    },
    "vocab": {s: i + 1 for i, s in enumerate(dict.fromkeys(KOKORO_SYMBOLS))},
}
# A Qwen2 small enough to train on 2 cores in seconds; vocabulary from SmolLM2's tokenizer.
QWEN2 = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.2,
)  # fmt: skip


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_llm(out: Path, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from salad_ray.assets import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(ModelRef(source="asset:smollm2-135m-instruct")))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **QWEN2,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_kokoro(out: Path, seed: int) -> None:
    import torch
    from kokoro import KModel

    torch.manual_seed(seed)
    empty = out / "empty.pth"
    out.mkdir(parents=True)
    torch.save({}, empty)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=dict(KOKORO_CONFIG), model=str(empty))
    empty.unlink()
    parts = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    torch.save({p: getattr(model, p).state_dict() for p in parts}, out / "kokoro-random.pth")
    (out / "config.json").write_text(json.dumps(KOKORO_CONFIG, ensure_ascii=False))
    (out / "voices").mkdir()
    torch.save(0.1 * torch.randn(510, 1, 256), out / "voices" / "af_heart.pt")


def link_asset(out: Path, asset: str) -> None:
    from salad_ray.assets import resolve

    out.symlink_to(resolve(ModelRef(source=asset)), target_is_directory=True)


def _fortunes(categories: list[str], limit: int, min_words: int, max_words: int):
    source = TextSource(
        kind="fortunes", categories=categories, min_words=min_words, max_words=max_words, limit=limit
    )
    return list(read_texts(source))


def _spoken(text: str, voice: str) -> tuple[np.ndarray, list[list[float]]]:
    """The text spoken word by word, and each word's [start, end] in seconds."""
    from salad_ray.tts.espeak import EspeakTTS

    pieces = EspeakTTS().synthesize(text.split(), voice)
    times, t = [], 0.0
    for piece in pieces:
        times.append([round(t, 4), round(t + len(piece) / SAMPLE_RATE, 4)])
        t += len(piece) / SAMPLE_RATE
    return np.concatenate(pieces), times


def build_libriheavy(out: Path, books: int = 3, segments: int = 4) -> None:
    """Consecutive segments of a few "books" (a fortunes category each), with word timestamps."""
    import datasets

    rows = []
    for b, category in enumerate(["computers", "linux", "science"][:books]):
        for n, record in enumerate(_fortunes([category], segments, 6, 20)):
            wave, times = _spoken(record.text, VOICES[b % len(VOICES)])
            rows.append(
                {
                    "id": f"{category}/{n:04d}",
                    "audio": {"bytes": encode_flac(wave), "path": f"{category}-{n:04d}.flac"},
                    "text": record.text,
                    "word_times": times,
                    "book_id": category,
                }
            )
    datasets.Dataset.from_list(rows).save_to_disk(str(out))


def build_emilia(out: Path, speakers: int = 2, segments: int = 4) -> None:
    """Emilia-YODAS's layout: one tar of <key>.mp3 + <key>.json per shard, keys EN_B.._S.._W.."""
    import soundfile as sf

    out.mkdir(parents=True)
    records = _fortunes(["linux"], speakers * segments + 8, 6, 20)[8:]
    samples = []
    for n, record in enumerate(records):
        speaker = f"EN_B00000_S{n // segments:05d}"
        key = f"{speaker}_W{n % segments:06d}"
        wave, _ = _spoken(record.text, VOICES[n // segments % len(VOICES)])
        mp3 = io.BytesIO()
        sf.write(mp3, wave, SAMPLE_RATE, format="MP3")
        meta = {
            "id": key,
            "wav": f"{key}.mp3",
            "text": record.text,
            "duration": round(len(wave) / SAMPLE_RATE, 3),
            "speaker": speaker,
            "language": "en",
            "dnsmos": 3.3,
        }
        samples.append((key, {"mp3": mp3.getvalue(), "json": json.dumps(meta).encode()}))
    webdataset_shard(out / "EN-B000000.tar", samples)


def webdataset_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """One webdataset tar: for each (key, parts) in order, a member ``<key>.<ext>`` per part."""
    with tarfile.open(path, "w") as tar:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def build_fineweb_edu(out: Path, documents: int = 400) -> None:
    """Fortunes of every category as web documents, in FineWeb-Edu's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "text": r.text,
            "id": f"<urn:uuid:{_text_id(r.text)}>",
            "dump": "CC-MAIN-2024-10",
            "url": f"https://fortunes.example/{r.domain}/{_text_id(r.text)}",
            "date": "2024-02-20T00:00:00Z",
            "file_path": "s3://commoncrawl/fortunes",
            "language": "en",
            "language_score": 0.95,
            "token_count": len(r.text.split()),
            "score": 3.0,
            "int_score": 3,
        }
        for r in _fortunes(None, documents, 8, 60)  # type: ignore[arg-type]
    ]
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "000_00000.parquet")


PARTS = {
    "llm": lambda out, seed: build_llm(out, seed),
    "kokoro": lambda out, seed: build_kokoro(out, seed),
    "asr": lambda out, seed: link_asset(out, "asset:whisper-tiny-ct2"),
    "embedder": lambda out, seed: link_asset(out, "asset:all-minilm-l6-v2"),
    "libriheavy": lambda out, seed: build_libriheavy(out),
    "emilia/EN": lambda out, seed: build_emilia(out),
    "fineweb-edu": lambda out, seed: build_fineweb_edu(out),
}


def build(out: Path, seed: int = 0) -> Path:
    """Every part under ``out`` that is not there yet (a part is written beside and renamed in)."""
    import shutil

    for name, make in PARTS.items():
        target = out / name
        if target.exists():
            continue
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        make(partial, seed)
        partial.rename(target)
        print(f"{name}: {target}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rehearsal-data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build(args.out, args.seed)


if __name__ == "__main__":
    main()
