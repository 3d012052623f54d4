"""A decoder cache for beam search that leaves the cross-attention keys and values alone."""

from __future__ import annotations

import torch
from transformers.cache_utils import EncoderDecoderCache


class SharedCrossAttentionCache(EncoderDecoderCache):
    """A decoder cache whose beam-search reordering leaves the cross-attention part alone.

    The beams of one input attend to the same encoder states, so their cross-attention keys and values
    are identical and reordering them is a no-op. The stock cache copies them at every step anyway:
    about a third of the decoding time at Florence-2-base's size with 3 beams on a CPU.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)
