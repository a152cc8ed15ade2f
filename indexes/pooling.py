"""Pooling, shared by the embedder's paths: a passage's vector out of its text's forward pass (the torch
and OpenVINO paths of `Embedder.encode_with_parts`: one definition, so both backends pool the same
tokens), and how a model's Pooling module is configured (the job's spec and the plain model read it alike)."""

from __future__ import annotations

import numpy as np


def pool_part(input_ids: np.ndarray, hidden: np.ndarray, part: list[int] | None, dim: int) -> np.ndarray:
    """The mean of the token vectors where `part` (token ids, no special tokens) first occurs in a
    text's `input_ids`; NaN where it does not (or there is no part). Padding never matches: a part has
    no pad tokens."""
    if part:
        ids, width = input_ids.tolist(), len(part)
        for start in range(len(ids) - width + 1):
            if ids[start] == part[0] and ids[start : start + width] == part:
                return hidden[start : start + width].mean(axis=0, dtype=np.float32)
    return np.full(dim, np.nan, dtype=np.float32)


def pooling_modes(pooling: dict) -> tuple[int | None, list[str]]:
    """A sentence-transformers Pooling module's input width and its modes (`mean`, `cls_token`, ...),
    from its config.json in either format: `pooling_mode: "mean"` or a list, with `embedding_dimension`;
    or the older `pooling_mode_<mode>: true` flags, with `word_embedding_dimension`."""
    width = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    if "pooling_mode" in pooling:
        named = pooling["pooling_mode"]
        modes = [named] if isinstance(named, str) else list(named)
    else:
        modes = [
            k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True
        ]
    return (width if isinstance(width, int) else None), [str(m).removesuffix("_tokens") for m in modes]
