"""Pooling a passage's vector out of its text's forward pass, shared by the embedder's torch and
OpenVINO paths (`Embedder.encode_with_parts`): one definition, so both backends pool the same tokens."""

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
