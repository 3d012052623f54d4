"""Token ids to text that keeps each token's character span. Standard library only.

The tokenizer is duck-typed: anything with ``decode(ids, ...)`` and an
``eos_token_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fiftyone_florence2.core.parsing import Generation, Span


def decode_with_spans(
    tokenizer: Any, special_ids: dict[int, str], ids: Sequence[int], logprobs: Sequence[float] | None
) -> Generation:
    """Decodes a generated sequence (decoder start token first), keeping each token's character span.

    Text between special tokens is decoded as one run, so characters that
    span several byte-level tokens come out whole; every token of a run gets
    the run's span. Everything after the first end token is padding, and dropped.
    """
    eos = tokenizer.eos_token_id
    end = next((i + 1 for i in range(1, len(ids)) if ids[i] == eos), len(ids))
    ids = list(ids[1:end])
    logprobs = list(logprobs[1:end]) if logprobs is not None else None
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0
    run: list[int] = []

    def flush() -> None:
        nonlocal pos
        if run:
            text = tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            parts.append(text)
            spans.extend([(pos, pos + len(text))] * len(run))
            pos += len(text)
            run.clear()

    for token_id in ids:
        token = special_ids.get(token_id)
        if token is None:
            run.append(token_id)
            continue
        flush()
        parts.append(token)
        spans.append((pos, pos + len(token)))
        pos += len(token)
    flush()
    return Generation("".join(parts), tuple(spans), tuple(logprobs) if logprobs is not None else ())
