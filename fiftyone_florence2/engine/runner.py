"""Florence-2 in torch and transformers: loading, device and dtype, batched generation.

It needs the core, torch and transformers, and never FiftyOne (the GPU benchmark runs it alone).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import Florence2ForConditionalGeneration, PretrainedConfig
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import cached_file

from fiftyone_florence2.core.checkpoints import (
    DEFAULT_CHECKPOINT,
    CheckpointError,
    check_native_config,
    resolve_checkpoint,
    snapshot_commit,
    weights_fingerprint,
    weights_stat,
)
from fiftyone_florence2.core.decoding import decode_with_spans
from fiftyone_florence2.core.options import OPTIONS
from fiftyone_florence2.core.parsing import Generation
from fiftyone_florence2.core.tasks import Task
from fiftyone_florence2.engine.adapters import native_to_load
from fiftyone_florence2.engine.added_rows import added_rows, rows_masked
from fiftyone_florence2.engine.cache import SharedCrossAttentionCache
from fiftyone_florence2.engine.devices import pick_device, pick_dtype
from fiftyone_florence2.engine.items import ImagePreprocessor
from fiftyone_florence2.engine.loading import backend_name, hub_kwargs, load_processor
from fiftyone_florence2.engine.scoring import LOC_WINDOW, loc_first_id, target_logprobs
from fiftyone_florence2.engine.weights import corrupt_weights_error, finish_cut_short_swap

logger = logging.getLogger(__name__)


# Log-probabilities are floored so that a confidence is never exactly 0.
_MIN_LOGPROB = -100.0
# Logits computed at once when scoring: rows x positions x vocabulary.
_SCORE_CHUNK_ELEMENTS = 1 << 27

GenerateKwargs = dict[str, Any] | Callable[[Task, list[str]], dict[str, Any]] | None
# generate arguments that bring their own cache or change how rows are expanded: with
# any of them, generation uses transformers' own cache.
_OWN_CACHE_ARGUMENTS = frozenset(
    {"cache", "past_key_values", "use_cache", "cache_implementation", "assistant_model", "prompt_lookup_num_tokens"}
)


@dataclass
class Timings:
    """Seconds spent in each stage, for benchmarks and summaries."""

    vision: float = 0.0
    generate: float = 0.0
    score: float = 0.0
    images: int = 0
    generations: int = 0


class Florence2Runner:
    """Loads Florence-2 and runs batched generation on shared image features.

    Args:
        checkpoint: a Hub id or a local directory in transformers' native format
        revision (None): a Hub branch, tag or commit
        device (None): ``cuda``, ``cuda:1``, ``mps`` or ``cpu``; picked when None
        dtype (None): ``float32``, ``bfloat16`` or ``float16``; picked when None
        attn_implementation ("sdpa"): the attention kernel
    """

    def __init__(
        self,
        checkpoint: str = DEFAULT_CHECKPOINT,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str = "sdpa",
    ):
        self.checkpoint = resolve_checkpoint(checkpoint)
        # An original-format checkpoint loads through its native conversion, a LoRA adapter through its merge
        # into its base (each made once, cached).
        self.checkpoint, revision, self.converted_from = native_to_load(self.checkpoint, revision)
        finish_cut_short_swap(self.checkpoint)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.timings = Timings()
        kwargs = hub_kwargs(self.checkpoint, revision)
        # Which weights are in memory, for the run records and the App's cache: the files' content hash,
        # taken with their stat before loading and checked unchanged after (None for a Hub id).
        self.weights_stat = weights_stat(self.checkpoint)
        self.weights_sha256 = weights_fingerprint(self.checkpoint)
        config, _ = PretrainedConfig.get_config_dict(self.checkpoint, **kwargs)
        check_native_config(config, self.checkpoint)
        self.processor = load_processor(self.checkpoint, **kwargs)
        try:
            self.model = Florence2ForConditionalGeneration.from_pretrained(
                self.checkpoint,
                dtype=self.dtype,
                attn_implementation=attn_implementation,
                use_safetensors=True,
                trust_remote_code=False,
                **kwargs,
            )
        except SafetensorError as e:  # a truncated, empty or garbled weights file
            raise corrupt_weights_error(self.checkpoint, e) from None
        if weights_stat(self.checkpoint) != self.weights_stat:
            raise CheckpointError(
                f"Checkpoint {self.checkpoint!r} changed while it loaded (is a training run writing it?); "
                "load it again once it is complete."
            )
        self._attach(self.model, self.processor, revision)
        if not os.path.isdir(self.checkpoint):  # the commit the Hub files came from, not a branch name
            self.revision = snapshot_commit(cached_file(self.checkpoint, "config.json", **kwargs)) or self.revision

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, checkpoint: str) -> Florence2Runner:
        """A runner on weights already in memory (a model in training), on their device and dtype."""
        runner = cls.__new__(cls)
        runner.checkpoint, runner.timings = checkpoint, Timings()
        runner.weights_stat = runner.weights_sha256 = None  # weights in memory, not read from files
        runner.converted_from = None
        weight = next(model.parameters())
        runner.device, runner.dtype = weight.device, weight.dtype
        runner._attach(model, processor, None)
        return runner

    def _attach(self, model: Any, processor: Any, revision: str | None) -> None:
        self.model, self.processor = model, processor
        self.model.to(self.device).eval()
        self.revision = getattr(self.model.config, "_commit_hash", None) or revision
        self.tokenizer = self.processor.tokenizer
        self.preprocess = ImagePreprocessor(self.processor.image_processor)
        self.image_backend = backend_name(self.processor.image_processor)  # "pil" or "torchvision", for records
        # An image embedding's length: the projection the text encoder reads (768 base, 1024 large).
        self.embedding_dim = int(self.model.config.vision_config.projection_dim)
        self._image_prefix = self.tokenizer.image_token * self.processor.num_image_tokens
        added = self.tokenizer.get_added_vocab()
        self._special_ids = {i: token for token, i in added.items()}
        self._special_ids.update(dict(zip(self.tokenizer.all_special_ids, self.tokenizer.all_special_tokens)))
        text_config = self.model.config.text_config
        self.max_text_positions = int(text_config.max_position_embeddings)
        self.max_new_tokens_limit = self.max_text_positions - 1
        # The encoder reads the image tokens, then <s>, the question and </s>.
        self.question_room = self.max_text_positions - self.processor.num_image_tokens - 2
        self._default_no_repeat = int(self.model.generation_config.no_repeat_ngram_size or 0)
        # Tokens generation never emits: scoring leaves them out, so confidences are over the vocabulary the
        # model answers from. The rows a conversion added (<image>, padding: the original lacked them) are masked
        # in the logits themselves while generating, before normalisation, so that beams rank as the original's.
        self._suppressed = sorted(set(self.model.generation_config.suppress_tokens or ()))
        self._added_rows = added_rows(self.model)
        self._cross_attention = self._cross_attention_modules()
        self._loc_first = loc_first_id(self.tokenizer)

    @property
    def coordinate_window(self) -> int | None:
        """How far a coordinate may lie from its bin in the confidences (None: its bin alone), for records."""
        return LOC_WINDOW if self._loc_first is not None else None

    def check_question(self, question: str) -> None:
        """Raises ``ValueError`` if ``question`` cannot fit beside the image in the text encoder."""
        used = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        if used > self.question_room:
            raise ValueError(
                f"the prompt is too long: with the task's question it takes {used} tokens, and at most "
                f"{self.question_room} fit (the text encoder has {self.max_text_positions} positions, "
                f"of which the image takes {self.processor.num_image_tokens})"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """The ``(width, height)`` images are resized to."""
        size = self.processor.image_processor.size
        return int(size.get("width", size.get("shortest_edge"))), int(size.get("height", size.get("shortest_edge")))

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Vision tower and projection for a batch of images, computed once and shared by tasks."""
        start = time.perf_counter()
        if not isinstance(pixel_values, torch.Tensor):
            pixel_values = torch.stack(list(pixel_values))
        pixel_values = pixel_values.to(self.device, self.dtype, non_blocking=True)
        features = self.model.get_image_features(pixel_values).pooler_output
        self._sync()
        self.timings.vision += time.perf_counter() - start
        self.timings.images += len(pixel_values)
        return features

    @staticmethod
    @torch.inference_mode()
    def pool_features(features: torch.Tensor) -> np.ndarray:
        """One embedding per image, ``(B, embedding_dim)`` float32: its image tokens' mean, L2-normalised."""
        return torch.nn.functional.normalize(features.float().mean(dim=1), dim=-1).cpu().numpy()

    @staticmethod
    def concat_features(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Joins features computed in several calls into one batch."""
        return torch.cat(list(parts))

    def no_repeat_ngram_size(self, task: Task) -> int:
        """N-gram blocking corrupts location sequences, which legitimately repeat."""
        return 0 if task.structured else self._default_no_repeat

    def max_new_tokens(self, task: Task, requested: int | None = None) -> int:
        """The task's budget (or ``requested``), within what the decoder's positions allow."""
        budget = task.max_new_tokens if requested is None else int(requested)
        if budget < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {budget}.")
        return min(budget, self.max_new_tokens_limit)

    @torch.inference_mode()
    def generate(
        self,
        task: Task,
        features: torch.Tensor,
        questions: Sequence[str],
        image_index: Sequence[int],
        num_beams: int = OPTIONS["num_beams"].default,
        max_new_tokens: int | None = None,
        generate_kwargs: GenerateKwargs = None,
        scores: bool = True,
    ) -> list[Generation]:
        """Generates one answer per question, each about image ``features[image_index[i]]``.

        All questions go through one ``generate`` call: chunk them beforehand
        to bound memory.
        """
        if len(questions) != len(image_index):
            raise ValueError("Each question needs the index of its image.")
        if not questions:
            return []
        start = time.perf_counter()
        texts = [f"{self._image_prefix}{self.tokenizer.bos_token}{q}{self.tokenizer.eos_token}" for q in questions]
        encoded = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.device)
        attention_mask = encoded["attention_mask"].to(self.device)
        index = torch.as_tensor(list(image_index), device=features.device)
        encoder_outputs = self._encode(input_ids, attention_mask, features.index_select(0, index))
        hidden = encoder_outputs.last_hidden_state
        extra = generate_kwargs(task, list(questions)) if callable(generate_kwargs) else dict(generate_kwargs or {})
        settings = {
            "max_new_tokens": self.max_new_tokens(task, max_new_tokens),
            "num_beams": num_beams,
            "do_sample": False,
            "no_repeat_ngram_size": self.no_repeat_ngram_size(task),
            **({"early_stopping": True} if num_beams > 1 else {}),
            **extra,
        }
        # The encoder runs once, here, and so do the cross-attention keys and
        # values (once per input, not per beam): generate starts from them,
        # and the scoring pass reuses them.
        cross = self._cross_attention_states(hidden) if self._own_cache_allowed(settings) else None
        if cross is not None:
            settings["cache"] = self._decoder_cache(cross, expand=max(1, int(settings["num_beams"] or 1)))
        with rows_masked(self.model, self._added_rows):
            output = self.model.generate(
                input_ids=input_ids,
                encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                attention_mask=attention_mask,
                return_dict_in_generate=True,
                **settings,
            )
        sequences = self._trim(output.sequences)
        del output, settings  # frees the beams' cache before scoring
        self._sync()
        self.timings.generate += time.perf_counter() - start
        self.timings.generations += len(questions)
        logprobs = self._score(hidden, attention_mask, sequences, cross) if scores else None
        return [
            self._decode(sequences[i].tolist(), None if logprobs is None else logprobs[i])
            for i in range(len(questions))
        ]

    def _cross_attention_modules(self) -> list[torch.nn.Module] | None:
        """The decoder layers' cross-attention modules, if they have the layout this runner knows."""
        decoder = getattr(getattr(self.model.model, "language_model", None), "decoder", None)
        modules = [getattr(layer, "encoder_attn", None) for layer in getattr(decoder, "layers", [])]
        if not modules or not all(hasattr(m, a) for m in modules for a in ("k_proj", "v_proj", "head_dim")):
            return None  # an unknown layout: transformers' own cache works, only slower
        return modules

    def _own_cache_allowed(self, settings: dict[str, Any]) -> bool:
        config = self.model.generation_config
        return (
            self._cross_attention is not None
            and not _OWN_CACHE_ARGUMENTS & settings.keys()
            and int(settings.get("num_return_sequences") or 1) == 1
            and config.cache_implementation is None
            and config.use_cache is not False
        )

    def _cross_attention_states(self, hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Every decoder layer's cross-attention keys and values, computed once per input (left to
        ``generate``, they are computed once per beam, and once more by the scoring pass)."""
        if self._cross_attention is None:
            return None
        states = []
        for attention in self._cross_attention:
            shape = (*hidden.shape[:-1], -1, attention.head_dim)
            keys = attention.k_proj(hidden).view(shape).transpose(1, 2)
            values = attention.v_proj(hidden).view(shape).transpose(1, 2)
            states.append((keys, values))
        return states

    def _decoder_cache(self, cross: list[tuple[torch.Tensor, torch.Tensor]], expand: int = 1, rows=None):
        """A fresh decoder cache holding the given cross-attention states, rows repeated ``expand`` times."""
        config = self.model.config
        cross_cache = DynamicCache(config=config)
        for layer, (keys, values) in enumerate(cross):
            if rows is not None:
                keys, values = keys[rows], values[rows]
            if expand > 1:
                keys, values = keys.repeat_interleave(expand, dim=0), values.repeat_interleave(expand, dim=0)
            cross_cache.update(keys, values, layer)
        return SharedCrossAttentionCache(DynamicCache(config=config), cross_cache)

    def _trim(self, sequences: torch.Tensor) -> torch.Tensor:
        """Drops columns that hold only padding after every end token."""
        pad = self.tokenizer.pad_token_id
        keep = (sequences != pad).any(dim=0).nonzero()
        return sequences[:, : int(keep.max()) + 1] if len(keep) else sequences

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor):
        """Text encoder over the prompt, with the image features in place of the image tokens."""
        embeds = self.model.get_input_embeddings()(input_ids)
        image_mask = (input_ids == self.model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(image_mask, features.to(embeds.dtype))
        return self.model.get_encoder()(inputs_embeds=embeds, attention_mask=attention_mask)

    @torch.inference_mode()
    def _score(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        sequences: torch.Tensor,
        cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> list[list[float]]:
        """Each generated token's log-probability under the model, by teacher forcing.

        Scoring the final sequences in one parallel pass gives the model's own probabilities whatever the
        search (beams, forced tokens, n-gram blocking), without keeping per-step logits for the vocabulary.
        """
        start = time.perf_counter()
        decoder_inputs, targets = sequences[:, :-1], sequences[:, 1:]
        vocab = self.model.config.text_config.vocab_size
        rows = max(1, _SCORE_CHUNK_ELEMENTS // max(1, decoder_inputs.shape[1] * vocab))
        chunks = []
        for lo in range(0, len(sequences), rows):
            part = slice(lo, lo + rows)
            with rows_masked(self.model, self._suppressed):
                logits = self.model(
                    encoder_outputs=BaseModelOutput(last_hidden_state=hidden[part]),
                    attention_mask=attention_mask[part],
                    decoder_input_ids=decoder_inputs[part],
                    **({"cache": self._decoder_cache(cross, rows=part)} if cross is not None else {"use_cache": False}),
                ).logits.float()
            chunks.append(target_logprobs(logits, targets[part], self._loc_first))
        scores = torch.cat(chunks).clamp(min=_MIN_LOGPROB).cpu().numpy()
        self._sync()
        self.timings.score += time.perf_counter() - start
        # Position 0 of a sequence is the decoder start token, which is given.
        return [np.concatenate([[0.0], row]).tolist() for row in scores]

    def _decode(self, ids: list[int], logprobs: list[float] | None) -> Generation:
        return decode_with_spans(self.tokenizer, self._special_ids, ids, logprobs)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
