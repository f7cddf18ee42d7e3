"""The student: frozen speech encoder -> adapter -> causal LLM, fed mixed speech/text sequences.

For a batch, every speech span is encoded (frozen, no grad), its frames stacked and mapped by the
adapter to vectors in the LLM's input-embedding space: every adapter frame is one LLM position
(``adapter.positions: frames``, the paper), or the frames are compressed to one position per token
that their CTC labels spell (``positions: ctc``, :mod:`salad_ray.model.compress`), n_k positions
for span k either way. The mixed context c of each
sample is assembled from the LLM's token embeddings of w and those vectors (see
:func:`salad_ray.interleave.mixed_layout`). The LLM (fully fine-tuned, or LoRA through peft) runs on
``inputs_embeds``; callers take hidden states at the rows they need and project only those to the
vocabulary (:meth:`SpeechLM.logits`), which keeps (rows x vocab) small. The projection is the LLM's
own (:func:`salad_ray.model.logits.output_logits`: output embeddings, then any logit scale or
soft-capping its config declares), the one the teacher uses, checked against the LLM's forward when
a student is built.

A student saves to and loads from a directory::

    student/
      salad_student.json      the model section of the config (encoder, adapter, LoRA, LLM source)
      adapter.safetensors
      llm/                    the fine-tuned LLM (safetensors) and tokenizer, or
      llm-lora/               the LoRA weights (safetensors), applied to the LLM source on load

``SpeechLM.load(path)`` rebuilds it in one call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from salad_ray.assets import resolve
from salad_ray.batch import Batch
from salad_ray.config import AdapterPositions, ModelsConfig
from salad_ray.interleave import MixedLayout, mixed_layout, text_rows
from salad_ray.model.adapter import Adapter
from salad_ray.model.compress import ctc_compress, spelled_tokens
from salad_ray.model.encoders import SpeechEncoder, build_encoder
from salad_ray.model.logits import check_logits, output_logits

STUDENT_FILE = "salad_student.json"
ADAPTER_FILE = "adapter.safetensors"
FORMAT_VERSION = 1


def require_saved(directory: str | Path) -> Path:
    """``directory`` if it holds a saved student (:meth:`SpeechLM.save`), else FileNotFoundError."""
    directory = Path(directory)
    if not (directory / STUDENT_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a saved student: {STUDENT_FILE} is missing")
    return directory


@dataclass(frozen=True)
class Rows:
    """Flattened rows of a batch's hidden states: sample index, row in the flattened (B * L) states,
    the index in w of the token that row predicts, and ``after_speech``: whether the row's causal
    context holds a speech frame (the row is at or after its sample's first speech frame, so the
    token it predicts follows speech; always False on pure text)."""

    sample: torch.Tensor
    flat: torch.Tensor
    w: torch.Tensor
    after_speech: torch.Tensor

    def __len__(self) -> int:
        return self.sample.numel()

    def select(self, keep: torch.Tensor) -> Rows:
        """The rows where the (N,) boolean ``keep`` holds."""
        keep = keep.cpu()
        return Rows(self.sample[keep], self.flat[keep], self.w[keep], self.after_speech[keep])


def _rows(
    sample: list[np.ndarray], flat: list[np.ndarray], w: list[np.ndarray], after_speech: list[np.ndarray]
) -> Rows:
    index = (torch.from_numpy(np.concatenate(a).astype(np.int64)) for a in (sample, flat, w))
    return Rows(*index, torch.from_numpy(np.concatenate(after_speech).astype(bool)))


def first_speech_frame(layout: MixedLayout) -> int:
    """The c position of a sample's first speech frame; len(c) when it has none."""
    return layout.speech_slices[0][0] if layout.speech_slices else layout.length


def mixed_rows(layouts: list[MixedLayout], c_len: int) -> Rows:
    """Text targets of c: row ``c_rows`` of sample b predicts w[w_rows]; the target follows speech
    when ``c_rows`` >= the first speech frame's position."""
    return _rows(
        [np.full(len(lay.c_rows), b) for b, lay in enumerate(layouts)],
        [b * c_len + lay.c_rows for b, lay in enumerate(layouts)],
        [lay.w_rows for lay in layouts],
        [lay.c_rows >= first_speech_frame(lay) for lay in layouts],
    )


def pure_text_rows(batch: Batch) -> Rows:
    """Every predicted position of w: row i - 1 of sample b predicts w[i]."""
    lw = batch.w_ids.shape[1]
    parts = [(b, *text_rows(int(n))) for b, n in enumerate(batch.w_lens)]
    return _rows(
        [np.full(len(r), b) for b, r, _ in parts],
        [b * lw + r for b, r, _ in parts],
        [i for _, _, i in parts],
        [np.zeros(len(r), dtype=bool) for _, r, _ in parts],
    )


class SpeechLM(nn.Module):
    """Encoder (frozen, held outside the module tree) + adapter + LLM."""

    def __init__(self, models: ModelsConfig, encoder: SpeechEncoder, llm: nn.Module, tokenizer):
        super().__init__()
        self.models = models
        self.tokenizer = tokenizer
        self.llm = llm
        check_logits(self._causal_lm())  # the projection below is the LLM's own (F = 0 untrained)
        hidden = self._causal_lm().config.hidden_size
        self.adapter = Adapter(encoder.dim, hidden, models.encoder.stack, models.adapter)
        # A plain attribute, not a submodule: the frozen encoder stays out of state_dict, optimisers,
        # DDP and FSDP.
        self.encoder = encoder

    # ---------------------------------------------------------------------------------- building

    @classmethod
    def from_config(cls, models: ModelsConfig) -> SpeechLM:
        """A fresh student: the LLM from ``models.llm``, a randomly initialised adapter."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve(models.llm, "causal-lm")
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        student = cls(
            models,
            build_encoder(models.encoder),
            _with_lora(llm, models),
            AutoTokenizer.from_pretrained(path),
        )
        # Start the adapter's outputs at the scale of the LLM's token embeddings.
        scale = student._causal_lm().get_input_embeddings().weight.detach().float().pow(2).mean().sqrt()
        with torch.no_grad():
            student.adapter.out.weight.mul_(scale)
        return student

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> SpeechLM:
        """Rebuild a saved student (see the module docstring)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory = require_saved(directory)
        meta_file = directory / STUDENT_FILE
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format {meta.get('format')} is not {FORMAT_VERSION}")
        models = ModelsConfig.model_validate(meta["models"])
        if models.lora.enabled:
            from peft import PeftModel

            base_path = resolve(models.llm, "causal-lm")
            base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
            llm = PeftModel.from_pretrained(base, directory / "llm-lora", is_trainable=True)
            tokenizer = AutoTokenizer.from_pretrained(base_path)
        else:
            llm = AutoModelForCausalLM.from_pretrained(directory / "llm", dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(directory / "llm")
        student = cls(models, build_encoder(models.encoder), llm, tokenizer)
        student.adapter.load_state_dict(load_file(directory / ADAPTER_FILE))
        return student.to(device)

    def save(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the student (see the module docstring).

        ``state_dict`` replaces the module's own tensors: a sharded (FSDP) student passes its
        gathered full state dict, keys as in ``self.state_dict()``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict() if state_dict is None else state_dict
        adapter = {
            k.removeprefix("adapter."): v.detach().contiguous().cpu()
            for k, v in state.items()
            if k.startswith("adapter.")
        }
        llm = {k.removeprefix("llm."): v for k, v in state.items() if k.startswith("llm.")}
        save_file(adapter, directory / ADAPTER_FILE)
        if self.models.lora.enabled:
            self.llm.save_pretrained(directory / "llm-lora", state_dict=llm)
        else:
            self.llm.save_pretrained(directory / "llm", state_dict=llm)
            self.tokenizer.save_pretrained(directory / "llm")
        meta = {"format": FORMAT_VERSION, "models": self.models.model_dump(mode="json")}
        (directory / STUDENT_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    def to(self, *args, **kwargs) -> SpeechLM:
        super().to(*args, **kwargs)
        self.encoder.to(self.device)
        return self

    # ----------------------------------------------------------------------------------- parts

    def _causal_lm(self) -> nn.Module:
        """The transformers causal LM under any peft wrapper."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    @property
    def vocab_size(self) -> int:
        return self._causal_lm().get_input_embeddings().weight.shape[0]

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def frames(self, num_samples: int) -> int:
        """Adapter frames a speech span of ``num_samples`` samples becomes: its LLM positions, or
        with CTC compression (``adapter.positions: ctc``) an upper bound on them."""
        return self.adapter.frames(self.encoder.frames(num_samples))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group: ``adapter`` and ``llm``."""
        return {
            "adapter": [p for p in self.adapter.parameters() if p.requires_grad],
            "llm": [p for p in self.llm.parameters() if p.requires_grad],
        }

    # --------------------------------------------------------------------------------- forward

    def forward(
        self,
        batch: Batch,
        context: str = "mixed",
        rows: Rows | None = None,
        classes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Rows | None]:
        """Vocabulary logits (N, V) at N rows of the batch, and those rows.

        ``context="mixed"`` runs the mixed contexts c (default rows: their text targets);
        ``context="text"`` runs the pure texts w (default rows: every predicted position);
        ``context="speech"`` runs the adapter alone and returns the alignment scores of every speech
        span's frames against the token ids ``classes`` (:meth:`alignment_scores`), rows None. All of a
        step's computation goes through here, so DDP and FSDP see one forward per call.
        """
        if context == "speech":
            if classes is None:
                raise ValueError("context='speech' needs the token ids to score the frames against")
            return self.alignment_scores(batch, classes), None
        if context == "mixed":
            hidden, _, layouts = self.mixed_hidden(batch)
            rows = rows if rows is not None else mixed_rows(layouts, hidden.shape[1])
        elif context == "text":
            hidden = self.text_hidden(batch)
            rows = rows if rows is not None else pure_text_rows(batch)
        else:
            raise ValueError(f"context must be 'mixed' or 'text', got {context!r}")
        return self.logits(hidden.flatten(0, 1)[rows.flat.to(hidden.device)]), rows

    def adapter_frames(self, audio: list[np.ndarray]) -> list[torch.Tensor]:
        """Adapter outputs (frames(len(a)), H) for each speech span."""
        if not audio:
            return []
        feats = self.encoder.encode(audio)  # (T_k, D) each, frozen
        lengths = [self.adapter.frames(f.shape[0]) for f in feats]
        padded = pad_sequence(feats, batch_first=True).to(self.device)  # (K, T_max, D), zeros after each span
        out = self.adapter(padded)  # (K, T'_max, H)
        return [out[k, :n] for k, n in enumerate(lengths)]

    def speech_embeddings(self, audio: list[np.ndarray]) -> list[torch.Tensor]:
        """The LLM input positions (n_k, H) of each speech span: its adapter frames, or their CTC
        compression (:func:`salad_ray.model.compress.ctc_compress`) under ``adapter.positions: ctc``."""
        frames = self.adapter_frames(audio)
        if self.models.adapter.positions == AdapterPositions.FRAMES:
            return frames
        table = self._causal_lm().get_input_embeddings().weight
        return ctc_compress(frames, table, self.models.adapter.ctc_top_k)

    @torch.no_grad()
    def spelled_tokens(self, audio: list[np.ndarray]) -> list[list[int]]:
        """The token ids each speech span's adapter frames spell under greedy CTC
        (:func:`salad_ray.model.compress.spelled_tokens`)."""
        return spelled_tokens(self.adapter_frames(audio), self._causal_lm().get_input_embeddings().weight)

    def _idle(self) -> torch.Tensor:
        """The adapter run on one all-zero frame group, (1, 1, H). A batch without speech still runs
        the adapter (its output weighted by zero), so every worker of a DDP or FSDP student takes part
        in the adapter's gradient collectives on every step."""
        return self.adapter(torch.zeros(1, self.adapter.stack, self.encoder.dim, device=self.device))

    def alignment_scores(self, batch: Batch, classes: torch.Tensor) -> torch.Tensor:
        """Scores (K, T', 1 + C) of the K speech spans' adapter frames (right-padded to T'):

            score[k, t, 0] = 0                      the CTC blank
            score[k, t, 1 + c] = <h_kt, e(classes[c])>

        h_kt the adapter's output at frame t of span k and e the LLM's (frozen) input embeddings: a
        frame scores high for a token when it points where the LLM reads that token. A batch without
        speech scores the adapter's idle output (:meth:`_idle`), K = T' = 1. The warm-up
        objective (:func:`salad_ray.losses.ctc_alignment`) trains the adapter on these without
        running the LLM.
        """
        audio = [a for sample in batch.audio for a in sample]
        frames = pad_sequence(self.adapter_frames(audio), batch_first=True) if audio else self._idle()
        table = self._causal_lm().get_input_embeddings().weight.detach()[classes.to(self.device)]  # (C, H)
        scores = frames @ table.to(frames.dtype).T  # (K, T', C)
        return torch.cat([scores.new_zeros(*scores.shape[:2], 1), scores], dim=-1)

    def mixed_hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[MixedLayout]]:
        """Last hidden states on the mixed contexts c: ((B, Lc, H), (B, Lc) mask, layouts)."""
        inputs, mask, layouts = self.mixed_inputs(batch)
        return self._decode(inputs, mask), mask, layouts

    def mixed_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[MixedLayout]]:
        """The LLM's input embeddings of the mixed contexts c: ((B, Lc, H), (B, Lc) mask, layouts)."""
        speech = self.speech_embeddings([a for sample in batch.audio for a in sample])
        token_emb = self._causal_lm().get_input_embeddings()(batch.w_ids.to(self.device))  # (B, Lw, H)
        sequences, layouts, k = [], [], 0
        for b in range(len(batch)):
            frames = speech[k : k + len(batch.audio[b])]
            k += len(frames)
            w_len = int(batch.w_lens[b])
            layout = mixed_layout(w_len, batch.spans[b], [f.shape[0] for f in frames])
            # One gather from [token embeddings of w ; this sample's speech frames] builds c.
            table = torch.cat([token_emb[b, :w_len], *frames]) if frames else token_emb[b, :w_len]
            index = torch.from_numpy(layout.text_src.copy())
            speech_pos = index < 0
            index[speech_pos] = w_len + torch.arange(int(speech_pos.sum()))
            sequences.append(table[index.to(self.device)])
            layouts.append(layout)
        inputs = pad_sequence(sequences, batch_first=True)  # (B, Lc, H)
        if not speech:
            inputs = inputs + 0.0 * self._idle().sum()
        mask = pad_sequence([torch.ones(s.shape[0], dtype=torch.long) for s in sequences], batch_first=True)
        return inputs, mask.to(self.device), layouts

    def text_hidden(self, batch: Batch) -> torch.Tensor:
        """Last hidden states on the pure texts w: (B, Lw, H)."""
        ids = batch.w_ids.to(self.device)
        mask = (
            torch.arange(ids.shape[1], device=self.device)[None] < batch.w_lens.to(self.device)[:, None]
        ).long()
        return self._decode(self._causal_lm().get_input_embeddings()(ids), mask)

    def _decode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return (
            self._causal_lm()
            .get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
            .last_hidden_state
        )

    def logits(self, hidden_rows: torch.Tensor) -> torch.Tensor:
        """Project (N, H) hidden rows to (N, V) vocabulary logits, as the LLM's own forward does
        (:func:`salad_ray.model.logits.output_logits`, shared with the transformers teacher)."""
        return output_logits(self._causal_lm(), hidden_rows)


def _with_lora(llm: nn.Module, models: ModelsConfig) -> nn.Module:
    if not models.lora.enabled:
        return llm
    from peft import LoraConfig, get_peft_model

    lora = models.lora
    return get_peft_model(
        llm,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
