"""A sentence-transformers model read without sentence-transformers: tokenizer and pooling in numpy.

Why: with the transformer already converted to OpenVINO (`indexes.openvino_runtime`), the rest of a
plain model (a tokenizer, mean pooling, a normalisation) needs neither torch nor sentence-transformers,
and importing those two is most of what starting an embedder costs: 12-15 s of a fresh process on a
2-core AVX2 host, against under 1 s for `tokenizers` and `openvino`. Every index job's embed actor,
every gateway replica and every CLI process that embeds pays that start.

Only the layout whose output this module reproduces exactly is read: modules.json naming a
Transformer at the model's root, mean Pooling and at most a Normalize, a fast `tokenizer.json`, and
no setting of the Transformer module beyond its length, a false `do_lower_case` and the text
feature-extraction defaults that sentence-transformers 5 writes. Anything else
returns None and the caller loads sentence-transformers; a test checks token ids and vectors against
it on real chunks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexes.pooling import pooling_modes

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# What sentence_bert_config.json may hold here: the older length and case settings, and the newer
# ones as sentence-transformers 5 writes them for a text model read by its forward pass's hidden states.
TRANSFORMER_SETTINGS = {
    "max_seq_length": None,
    "do_lower_case": False,
    "transformer_task": "feature-extraction",
    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
    "module_output_name": "token_embeddings",
}


class PlainModel:
    """Tokenizes as the model's Transformer module does (truncated at `max_seq_length`, padded to the
    batch's longest text) and pools its token vectors as its Pooling and Normalize modules do."""

    def __init__(self, model_input: Tokenizer, plain: Tokenizer, dim: int, normalize: bool) -> None:
        self.dim = dim
        self.normalize = normalize
        self._model_input = model_input
        self._plain = plain

    @classmethod
    def open(cls, model_dir: Path, max_seq_length: int) -> PlainModel | None:
        """The model in `model_dir`, or None when its layout is not one this module reproduces."""
        try:
            listed = _json(model_dir / "modules.json")
            modules = [str(m["type"]).rsplit(".", 1)[-1] for m in listed]
            paths = [str(m.get("path", "")) for m in listed]
            if modules[:2] != ["Transformer", "Pooling"] or set(modules[2:]) - {"Normalize"} or paths[0]:
                return None
            settings = _json(model_dir / "sentence_bert_config.json")
            if any(k not in TRANSFORMER_SETTINGS or v != TRANSFORMER_SETTINGS[k] for k, v in settings.items()
                   if k != "max_seq_length"):  # fmt: skip
                return None
            dim = _mean_pooling_width(_json(model_dir / paths[1] / "config.json"))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        tokenizer_file = model_dir / "tokenizer.json"
        if dim is None or not tokenizer_file.is_file() or not _normalizer_agrees(model_dir, tokenizer_file):
            return None
        from tokenizers import Tokenizer

        model_input, plain = Tokenizer.from_file(str(tokenizer_file)), Tokenizer.from_file(str(tokenizer_file))
        pad_token = _pad_token(model_dir)
        pad_id = None if pad_token is None else model_input.token_to_id(pad_token)
        if pad_id is None:
            return None
        model_input.enable_truncation(max_seq_length)  # longest_first from the right, as the module asks
        model_input.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the batch's longest text
        plain.no_truncation()  # a tokenizer.json may carry its own truncation and padding
        plain.no_padding()
        return cls(model_input, plain, dim, normalize="Normalize" in modules)

    def preprocess(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The transformer's inputs for one batch, as int64 arrays."""
        encoded = self._model_input.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }

    def tail(self, features: dict[str, np.ndarray], hidden: np.ndarray) -> np.ndarray:
        """Mean of the token vectors under the attention mask, then unit length if the model normalises."""
        mask = features["attention_mask"][..., None].astype(np.float32)
        rows = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if self.normalize:
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows.astype(np.float32, copy=False)

    def token_ids(self, texts: list[str], special: bool) -> list[list[int]]:
        """Each text's token ids, untruncated, with or without the special tokens."""
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=special)]


def _json(path: Path):
    return json.loads(path.read_text())


def _normalizer_agrees(model_dir: Path, tokenizer_file: Path) -> bool:
    """transformers pads and truncates on the side tokenizer_config.json names, and rebuilds a BERT
    normaliser whose settings it contradicts; this module reads tokenizer.json as it is and works on
    the right, so such a model is left to sentence-transformers."""
    try:
        normalizer = _json(tokenizer_file).get("normalizer") or {}
        asked = _json(model_dir / "tokenizer_config.json")
    except (OSError, ValueError):
        return True  # no tokenizer_config.json: transformers too reads tokenizer.json as it is
    if any(asked.get(side, "right") != "right" for side in ("padding_side", "truncation_side")):
        return False  # this module pads and truncates on the right
    if normalizer.get("type") != "BertNormalizer":
        return True
    pairs = {
        "do_lower_case": "lowercase",
        "strip_accents": "strip_accents",
        "tokenize_chinese_chars": "handle_chinese_chars",
    }
    return all(normalizer.get(ours) == asked[theirs] for theirs, ours in pairs.items() if theirs in asked)


def _pad_token(model_dir: Path) -> str | None:
    """The padding token as transformers reads it: tokenizer_config.json, else special_tokens_map.json."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            token = _json(model_dir / name).get("pad_token")
        except (OSError, ValueError):
            continue
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str):
            return token
    return None


def _mean_pooling_width(pooling: dict) -> int | None:
    """The width of a mean-only Pooling module that pools the prompt's tokens too, else None."""
    width, modes = pooling_modes(pooling)
    if modes != ["mean"] or pooling.get("include_prompt", True) is not True:
        return None
    return width if width and width > 0 else None
