"""A real text corpus that needs no download: the Python documentation that ships with CPython in
`pydoc_data` (the text of `help("topic")`, about 0.5 MB), as byte-level tokens for a language model.

Tokens are the UTF-8 bytes of the text (vocabulary 256), so no tokenizer is needed and the vocabulary
does not depend on the text. The text itself is the running Python's: other Python versions ship
slightly different documentation, so figures measured on one version move a little on another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tokens are made: the task's recipe reads VOCAB_SIZE without it
    from torch import Tensor
    from torch.utils.data import TensorDataset

VOCAB_SIZE = 256
"""Byte-level tokens: every UTF-8 byte is one token."""

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Of every topic: the first 80% of its bytes train, the next 10% validate, the last 10% test."""


@dataclass(frozen=True)
class TokenSplits:
    """The byte streams of the train, validation and test splits."""

    train: Tensor
    val: Tensor
    test: Tensor


def pydoc_topics() -> dict[str, str]:
    """The documentation topics of the running Python, by name."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:
        raise RuntimeError(
            f"this Python has no pydoc_data (the documentation text CPython ships): {error}"
        ) from None
    return dict(topics)


def split_topics(topics: dict[str, str], fraction: float = 1.0) -> TokenSplits:
    """Byte tokens of every topic (in sorted name order) split within each topic by `SPLIT_FRACTIONS`,
    so that each split covers every topic and no text is in two splits. `fraction` keeps the first
    part of every topic, for a smaller corpus with the same mix of topics."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction!r} must be in (0, 1]")
    parts: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    for name in sorted(topics):
        text = topics[name].encode("utf-8")
        text = text[: math.ceil(len(text) * fraction)]
        train_end = round(len(text) * SPLIT_FRACTIONS[0])
        val_end = train_end + round(len(text) * SPLIT_FRACTIONS[1])
        for part, piece in zip(
            parts, (text[:train_end], text[train_end:val_end], text[val_end:]), strict=True
        ):
            part.append(piece)
    train, val, test = (_tokens(b"".join(part)) for part in parts)
    return TokenSplits(train, val, test)


def _tokens(data: bytes) -> Tensor:
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def sequences(tokens: Tensor, context_length: int) -> TensorDataset:
    """Next-token pairs from consecutive windows of `context_length + 1` tokens that overlap by one, so
    that every token after the first is a target exactly once: inputs = window[:-1], targets =
    window[1:], both (N, context_length). The tail that does not fill a window is dropped."""
    if context_length < 1:
        raise ValueError(f"context_length {context_length!r} must be >= 1")
    count = (len(tokens) - 1) // context_length
    if count < 1:
        raise ValueError(
            f"{len(tokens)} tokens are too few for one sequence of context length {context_length}"
        )
    from torch.utils.data import TensorDataset

    windows = tokens[: count * context_length + 1].unfold(0, context_length + 1, context_length)
    return TensorDataset(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())


def unigram_perplexity(tokens: Tensor, vocab_size: int = VOCAB_SIZE) -> float:
    """exp(entropy) of the tokens' own frequencies: the perplexity of the best model that ignores
    context (any token-frequency model fitted elsewhere does no better on these tokens)."""
    import torch

    counts = torch.bincount(tokens.reshape(-1), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * p.log()).sum()))
