"""The embedder's OpenVINO path: the loaded sentence-transformers model's transformer, converted once.

Why not sentence-transformers' own `backend="openvino"`: it goes through `optimum`, whose releases pin
a `transformers` older than the one vLLM needs here. Converting the already-loaded torch module with
`openvino.convert_model` needs neither, and the rest of the model (pooling, normalisation) stays the
sentence-transformers modules themselves, run in torch on the transformer's output, so the vectors
are the same function of the text (cosine >= 0.9999 to torch, checked by a test). Once converted, a
plain model (tokenizer, mean pooling, normalize) starts from the cache without torch or
sentence-transformers at all (`compile_converted`, `indexes.plain_model`): the imports were most of
an embedder's start.

The converted model is kept on disk under a key made of the model's files and the versions that
shape the graph (OpenVINO, transformers, torch), so a replica or actor starts without converting;
writers race safely by renaming a finished directory into place.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import queue
import shutil
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexes.pooling import pool_part

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from indexes.plain_model import PlainModel

Preprocess = Callable[[list[str]], dict[str, np.ndarray]]  # texts -> the transformer's inputs for one batch
Tail = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]  # inputs, token vectors -> sentence vectors

log = logging.getLogger(__name__)

RECIPE = 1  # bump when the conversion below changes what is written
SAMPLE = ["a short sentence", "a somewhat longer sentence, so that the example batch is padded"]


class OpenVinoUnavailable(RuntimeError):
    """This model cannot run on OpenVINO here; the message says why (the caller falls back to torch)."""


class OpenVinoEncoder:
    """Runs the converted transformer, then the model's own torch modules after it, batch by batch.

    Batches are cut from the texts sorted by length and padded to their own longest text (as
    sentence-transformers does), and each call takes an inference request from a pool, so the
    retriever's threads can encode at the same time.

    A model compiled for throughput (`bulk`) has one OpenVINO stream per `parallel` request: the
    batches of one `encode` then run that many at a time, one thread each. Why: a latency model
    splits every call over all cores, and each of its steps waits for the slowest core, so a
    neighbour on one core (the index job's parse actor, Ray's own processes) stalls both; here one
    busy core slowed the latency model to 0.46 of its idle speed and the streams to 0.77.
    """

    def __init__(self, compiled: Any, preprocess: Preprocess, tail: Tail, dim: int) -> None:
        self.compiled = compiled
        self.preprocess = preprocess
        self.tail = tail
        self.dim = dim
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.parallel = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # What runs, not what was asked: a bf16 hint on a CPU without bf16 units compiles to f32, at
        # about a third of the speed (all-MiniLM-L6-v2 here: 45.9 chunks/s on AVX-512 bf16, 14.6 on AVX2).
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        # OpenVINO's Python binding initialises function-local statics on a request's first tensor
        # access; two threads doing that at once deadlocked an embed actor here (one in
        # __cxa_guard_acquire waiting for the GIL, the other holding it). So every request is made,
        # and has run once, on this thread before any other can use one.
        features = preprocess(SAMPLE)
        sample = {name: features[name] for name in self.input_names}
        for _ in range(self.parallel):
            request = compiled.create_infer_request()
            request.infer(sample)
            hidden = request.get_output_tensor(0).data.copy()
            self._requests.put(request)
        if tail(features, hidden).shape[-1] != dim:
            raise OpenVinoUnavailable(f"the converted transformer's output does not pool to {dim} dimensions")
        self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="openvino") if self.parallel > 1 else None

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.encode_with_parts(texts, batch_size, None)[0]

    def encode_with_parts(
        self, texts: list[str], batch_size: int, parts: list[list[int] | None] | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The texts' vectors and, with `parts` (token ids per text, or None), each part's mean token
        vector from its text's own forward pass (`indexes.pooling.pool_part`; NaN where not found)."""
        order = np.argsort([-len(text) for text in texts], kind="stable")
        batches = [order[start : start + batch_size] for start in range(0, len(texts), batch_size)]
        run = self._pool.map if self._pool is not None and len(batches) > 1 else map
        dim = self.dim
        vectors = np.zeros((len(texts), dim), dtype=np.float32)
        pooled = None if parts is None else np.full((len(texts), dim), np.nan, dtype=np.float32)

        def one(picked: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            return self._batch([texts[i] for i in picked], None if parts is None else [parts[i] for i in picked])

        for picked, (rows, part_rows) in zip(batches, run(one, batches), strict=True):
            vectors[picked] = rows
            if pooled is not None:
                pooled[picked] = part_rows
        return vectors, pooled

    def _batch(self, texts: list[str], parts: list[list[int] | None] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """One model call: tokenize, the converted transformer, then the model's own pooling (and the
        parts' mean token vectors, from the same hidden states)."""
        features = self.preprocess(texts)  # every call asks the same padding: no tokenizer state changes
        hidden = self._infer({name: features[name] for name in self.input_names})
        rows = self.tail(features, hidden)
        if parts is None:
            return rows, None
        ids = features["input_ids"]
        return rows, np.stack([pool_part(ids[r], hidden[r], part, rows.shape[1]) for r, part in enumerate(parts)])

    def _infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer(inputs)
            return request.get_output_tensor(0).data.copy()
        finally:
            self._requests.put(request)


def compile_for_cpu(
    model: SentenceTransformer, model_dir: Path, cache_dir: Path, precision: str, threads: int, bulk: bool = False
) -> OpenVinoEncoder:
    """The model's transformer as an OpenVINO CPU model, converted now or read from the cache, with the
    model's own torch modules after it: for `bulk` work (many batches per call) OpenVINO's throughput
    streams, else one call on all `threads` (a query: the fewest milliseconds).

    Raises OpenVinoUnavailable with the reason when OpenVINO is missing or the model does not fit.
    """
    openvino = _openvino()
    transformer = model[0] if len(model) else None
    if not hasattr(transformer, "auto_model") or not hasattr(model, "preprocess"):
        raise OpenVinoUnavailable(f"its first module is {type(transformer).__name__}, not a transformer")
    path = converted_path(model_dir, cache_dir, openvino.__version__)
    source = str(path) if path.is_file() else _convert(model, transformer.auto_model, path)
    preprocess, tail = _torch_steps(model)
    return _compile(source, preprocess, tail, int(model.get_embedding_dimension()), precision, threads, bulk)


def compile_converted(
    plain: PlainModel, model_dir: Path, cache_dir: Path, precision: str, threads: int, bulk: bool = False
) -> OpenVinoEncoder | None:
    """The model already converted into the cache, with its tokenizer and pooling in numpy: no torch
    and no sentence-transformers (`indexes.plain_model`). None when the cache does not hold it yet
    (the caller loads the model, which converts it). Raises OpenVinoUnavailable as `compile_for_cpu`."""
    openvino = _openvino()
    path = converted_path(model_dir, cache_dir, openvino.__version__)
    if not path.is_file():
        return None
    return _compile(str(path), plain.preprocess, plain.tail, plain.dim, precision, threads, bulk)


def _openvino() -> Any:
    """The openvino module, or OpenVinoUnavailable saying it is not installed."""
    try:
        import openvino
    except ImportError as exc:
        raise OpenVinoUnavailable(f"openvino is not installed ({exc})") from None
    return openvino


def converted_path(model_dir: Path, cache_dir: Path, openvino_version: str) -> Path:
    return cache_dir.expanduser() / _cache_key(model_dir, openvino_version) / "model.xml"


def _compile(source: Any, preprocess: Preprocess, tail: Tail, dim: int, precision: str, threads: int, bulk: bool):
    import openvino

    hint = "THROUGHPUT" if bulk else "LATENCY"
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
    try:
        compiled = openvino.Core().compile_model(source, "CPU", config)
    except RuntimeError as exc:
        raise OpenVinoUnavailable(f"compiling {source} failed: {exc}") from None
    encoder = OpenVinoEncoder(compiled, preprocess, tail, dim)
    if encoder.precision != precision:
        log.info("embedder: OpenVINO runs in %s here (%s asked; this CPU has no %s units)",
                 encoder.precision, precision, precision)  # fmt: skip
    return encoder


def _torch_steps(model: SentenceTransformer) -> tuple[Preprocess, Tail]:
    """The model's own tokenization and its modules after the transformer (pooling, normalize, dense),
    in torch, around the converted transformer: exactly the model's function of the text."""
    import torch

    modules = list(model)[1:]

    def preprocess(texts: list[str]) -> dict[str, np.ndarray]:
        return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in model.preprocess(texts).items()}

    def tail(features: dict[str, np.ndarray], hidden: np.ndarray) -> np.ndarray:
        values = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in features.items()}
        values["token_embeddings"] = torch.from_numpy(hidden)
        with torch.inference_mode():
            for module in modules:
                values = module(values)
        return values["sentence_embedding"].numpy()

    return preprocess, tail


def _convert(model: SentenceTransformer, auto_model: Any, path: Path) -> Any:
    """Trace the torch module with a padded example batch and save it; the finished directory is
    renamed into place, so a reader never sees half a model and two writers do not collide.

    Returns the saved file's path, or the converted model itself when the cache cannot be written
    (a read-only home, say): it still runs, and the warning says that it will convert again."""
    import openvino
    import torch

    example = {k: v for k, v in model.preprocess(SAMPLE).items() if isinstance(v, torch.Tensor)}
    log.info("embedder: converting %s to OpenVINO once, into %s", type(auto_model).__name__, path.parent)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the example batch is padded on purpose
            converted = openvino.convert_model(auto_model, example_input=example)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "this model cannot be converted"
        raise OpenVinoUnavailable(f"converting the model failed: {type(exc).__name__}: {exc}") from None
    try:
        _save(converted, path)
    except OSError as exc:
        log.warning("embedder: cannot keep the converted model in %s (%s); it is converted on every start",
                    path.parent, exc)  # fmt: skip
        return converted
    return str(path)


def _save(converted: Any, path: Path) -> None:
    import openvino

    path.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=path.parent.parent))
    try:
        openvino.save_model(converted, str(staging / path.name), compress_to_fp16=False)  # the weights as trained
        os.replace(staging, path.parent)
    except OSError:
        if not path.is_file():  # not another writer's finished copy: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@lru_cache(maxsize=8)
def _cache_key(model_dir: Path, openvino_version: str) -> str:
    """The model's files (names and bytes) and the versions that shape the traced graph."""
    digest = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(model_dir)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    # read from the installed metadata: a start from the cache imports neither
    versions = {"openvino": openvino_version, "transformers": _installed("transformers"),
                "torch": _installed("torch"), "recipe": RECIPE}  # fmt: skip
    digest.update(json.dumps(versions, sort_keys=True).encode())
    return f"{model_dir.name}-{digest.hexdigest()[:16]}"


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
