"""The embedder's backends: OpenVINO by default on CPU, torch as the fallback, the same vectors from both."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from pydantic import ValidationError

from indexes import openvino_runtime
from indexes.embedder import (
    EmbedderConfig,
    EmbedderSpec,
    _dimension_from_files,
    embedder_spec,
    load_embedder,
    resolve_model_path,
)
from indexes.openvino_runtime import _cache_key
from tests.conftest import REPO
from tests.unit.conftest import openvino_config

pytestmark = pytest.mark.unit

TEXTS = [
    "How do I read a CSV file?",
    "Why are there separate tuple and list data types? " * 12,
    "glob",
    "The secrets module is used for generating cryptographically strong random numbers. " * 30,
]


def test_openvino_vectors_equal_torch_vectors_and_the_spec_is_the_same(cache_dir, torch_embedder):
    fast = load_embedder(openvino_config(cache_dir))
    ours, reference = fast.encode(TEXTS, batch_size=2), torch_embedder.encode(TEXTS, batch_size=2)
    assert fast.backend == "openvino" and torch_embedder.backend == "torch"
    assert ours.shape == reference.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert (ours * reference).sum(axis=1).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert fast.spec == torch_embedder.spec  # the backend is not part of an index's identity
    assert fast.encode([]).shape == (0, 384)


def test_the_embedder_says_the_precision_it_computes_in_not_the_one_asked(cache_dir, torch_embedder, caplog):
    """bf16 is the default ask; a CPU without bf16 units runs f32 (about a third of the speed), and a
    benchmark that recorded the ask would credit one machine's figure to another's number format."""
    import openvino

    has_bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with caplog.at_level(logging.INFO, logger="indexes.openvino_runtime"):
        asked_bf16 = load_embedder(openvino_config(cache_dir))
    assert asked_bf16.precision == ("bf16" if has_bf16 else "f32")
    assert ("runs in f32 here (bf16 asked" in caplog.text) is not has_bf16
    f32 = EmbedderConfig(backend="openvino", openvino={"cache_dir": str(cache_dir), "precision": "f32"})
    assert load_embedder(f32).precision == "f32"
    assert torch_embedder.precision == "f32"


def test_batches_are_padded_to_their_own_longest_text(cache_dir):
    embedder = load_embedder(openvino_config(cache_dir))
    shapes = []
    infer = embedder.accelerated._infer
    embedder.accelerated._infer = lambda inputs: shapes.append(inputs["input_ids"].shape) or infer(inputs)
    embedder.encode(["tiny", "also tiny", TEXTS[3], TEXTS[1]], batch_size=2)
    long_batch, short_batch = shapes
    assert long_batch[1] == 256  # the long texts, truncated at max_seq_length
    assert short_batch[1] < 10  # the short ones are not padded to the long ones


def test_bulk_encoding_runs_model_calls_side_by_side_with_the_same_vectors(cache_dir, torch_embedder):
    """The index job's embed actors load for bulk: OpenVINO's throughput streams, one batch per
    stream at once, so a neighbour on one core slows one stream instead of stalling every call."""
    bulk = load_embedder(openvino_config(cache_dir), threads=2, bulk=True)
    latency = load_embedder(openvino_config(cache_dir), threads=2)
    assert (bulk.accelerated.parallel, latency.accelerated.parallel) == (2, 1)
    together = threading.Barrier(2, timeout=60)  # passes only when two model calls are in flight at once
    infer = bulk.accelerated._infer

    def in_pairs(inputs):
        together.wait()
        return infer(inputs)

    bulk.accelerated._infer = in_pairs
    texts = [*TEXTS, *(t.upper() for t in TEXTS)]  # four model calls of two: two pairs side by side
    vectors = bulk.encode(texts, batch_size=2)
    bulk.accelerated._infer = infer
    assert (vectors * latency.encode(texts, batch_size=2)).sum(axis=1).min() >= 0.99999  # each row is its own text's
    assert (vectors * torch_embedder.encode(texts, batch_size=2)).sum(axis=1).min() >= 0.9999


def test_every_inference_request_is_made_and_first_run_on_the_loading_thread(cache_dir):
    """OpenVINO's binding initialises statics on a request's first tensor access, and two threads doing
    that at once deadlocked an embed actor (`__cxa_guard_acquire` against the GIL): the encoder makes
    its requests and runs each once as it loads, so its threads only ever reuse warm ones."""
    real = load_embedder(openvino_config(cache_dir), threads=2, bulk=True)
    compiled, loading, seen = real.accelerated.compiled, threading.get_ident(), []

    class Recorded:
        def __init__(self):
            self.request = compiled.create_infer_request()

        def infer(self, inputs):
            seen.append(("ran", threading.get_ident()))
            return self.request.infer(inputs)

        def get_output_tensor(self, index):
            return self.request.get_output_tensor(index)

    class Compiled:
        inputs = compiled.inputs

        def get_property(self, name):
            return compiled.get_property(name)

        def create_infer_request(self):
            seen.append(("made", threading.get_ident()))
            return Recorded()

    encoder = openvino_runtime.OpenVinoEncoder(Compiled(), real.accelerated.preprocess, real.accelerated.tail, 384)
    assert seen == [("made", loading), ("ran", loading)] * 2  # two streams: two requests, each warm
    vectors = encoder.encode([*TEXTS, *(t.upper() for t in TEXTS)], batch_size=2)
    assert vectors.shape == (8, 384) and [event for event, _ in seen[4:]] == ["ran"] * 4  # none made later


def test_a_second_load_reads_the_converted_model_instead_of_converting(cache_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr("openvino.convert_model", refuse)
    assert load_embedder(openvino_config(cache_dir)).backend == "openvino"


def test_the_cache_key_follows_the_model_files(tmp_path):
    model = resolve_model_path("all-MiniLM-L6-v2")
    first, second = tmp_path / "a" / model.name, tmp_path / "b" / model.name
    shutil.copytree(model, first)
    shutil.copytree(model, second)
    assert _cache_key(first, "1") == _cache_key(second, "1")
    config = second / "config.json"
    config.write_text(config.read_text().replace("}", ', "note": "changed"}', 1))
    _cache_key.cache_clear()
    assert _cache_key(first, "1") != _cache_key(second, "1")
    assert _cache_key(first, "1") != _cache_key(first, "2")  # another OpenVINO version converts anew


def test_without_openvino_the_embedder_falls_back_to_torch_and_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with caplog.at_level(logging.WARNING, logger="indexes.embedder"):
        embedder = load_embedder(openvino_config(tmp_path))
    assert embedder.backend == "torch" and embedder.encode(["x"]).shape == (1, 384)
    [record] = [r for r in caplog.records if r.name == "indexes.embedder"]
    assert "OpenVINO backend unavailable" in record.getMessage() and "openvino is not installed" in record.getMessage()


def test_a_model_that_cannot_be_converted_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation aten::frobnicate")

    monkeypatch.setattr("openvino.convert_model", broken)
    with caplog.at_level(logging.WARNING, logger="indexes.embedder"):
        embedder = load_embedder(openvino_config(tmp_path / "empty-cache"))
    assert embedder.backend == "torch"
    assert "aten::frobnicate" in caplog.text
    assert not list((tmp_path / "empty-cache").glob("*/model.xml"))  # nothing half-written is left to be read


def test_a_cache_that_cannot_be_written_still_embeds_on_openvino(tmp_path, caplog, torch_embedder):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="indexes.openvino_runtime"):
        embedder = load_embedder(openvino_config(blocked))
    assert embedder.backend == "openvino"
    assert "cannot keep the converted model" in caplog.text and str(blocked) in caplog.text
    assert (embedder.encode(TEXTS[:2]) * torch_embedder.encode(TEXTS[:2])).sum(axis=1).min() >= 0.9999


def test_the_backend_follows_the_device_and_openvino_refuses_cuda():
    assert EmbedderConfig().wants_openvino
    assert not EmbedderConfig(device="cuda").wants_openvino
    assert not EmbedderConfig(backend="torch").wants_openvino
    with pytest.raises(ValidationError, match="backend 'openvino' runs on the CPU"):
        EmbedderConfig(backend="openvino", device="cuda")
    with pytest.raises(ValidationError, match="precision"):
        EmbedderConfig(openvino={"precision": "int4"})


def test_the_recipe_version_is_part_of_the_key(monkeypatch, tmp_path):
    model = resolve_model_path("all-MiniLM-L6-v2")
    before = _cache_key(model, "1")
    monkeypatch.setattr(openvino_runtime, "RECIPE", openvino_runtime.RECIPE + 1)
    _cache_key.cache_clear()
    assert _cache_key(model, "1") != before
    _cache_key.cache_clear()


def _model_with(tmp_path, *modules) -> str:
    """The packaged model with more sentence-transformers modules after it, saved as a directory."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
    for module in modules:
        model.append(module)
    model.save(str(tmp_path))
    return str(tmp_path)


def test_the_job_reads_the_spec_from_the_model_files_without_loading_the_model():
    code = (
        "import sys\nfrom indexes.embedder import EmbedderConfig, embedder_spec\n"
        "print(embedder_spec(EmbedderConfig()).model_dump_json())\n"
        "print('loaded' if 'sentence_transformers' in sys.modules or 'torch' in sys.modules else 'not loaded')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    spec_json, loaded = done.stdout.splitlines()[-2:]
    assert loaded == "not loaded"
    assert EmbedderSpec.model_validate_json(spec_json) == load_embedder(EmbedderConfig(backend="torch")).spec


def test_a_dense_layer_sets_the_spec_and_an_unknown_module_is_loaded_to_learn_it(tmp_path):
    from sentence_transformers import models

    dense = _model_with(tmp_path / "dense", models.Dense(384, 128))  # saved in the newer Pooling format
    assert _dimension_from_files(resolve_model_path(dense)) == 128
    assert embedder_spec(EmbedderConfig(model=dense)) == load_embedder(EmbedderConfig(model=dense, backend="torch")).spec
    odd = _model_with(tmp_path / "odd", models.Dense(384, 96), models.LayerNorm(96))
    assert _dimension_from_files(resolve_model_path(odd)) is None  # the files do not say: the model is loaded
    assert embedder_spec(EmbedderConfig(model=odd)).dim == 96


def test_a_passage_is_pooled_from_its_texts_own_forward_pass_on_both_backends(cache_dir, torch_embedder):
    """`encode_with_parts`: a part's vector is the mean of its tokens' vectors as the model reads them in
    the whole text (what the index job stores for a chunk's lead), the same on OpenVINO as on torch; a
    part the model does not read there (not in the text, or past max_seq_length) is left out."""
    cut = TEXTS[3] + "The part after the cut."
    texts = [TEXTS[1], TEXTS[0], cut, TEXTS[2]]
    parts = {0: "Why are there separate tuple and list data types?", 1: "glob", 2: "The part after the cut."}
    vectors, pooled = torch_embedder.encode_with_parts(texts, parts, batch_size=2)
    assert set(pooled) == {0}
    np.testing.assert_allclose(vectors, torch_embedder.encode(texts, batch_size=2), atol=1e-5)
    tokens = torch_embedder.model.encode(texts[0], output_value="token_embeddings").numpy()
    width = len(torch_embedder.model.tokenizer(parts[0], add_special_tokens=False)["input_ids"])
    mean = tokens[1 : 1 + width].mean(axis=0)  # after [CLS]: the part opens the text
    np.testing.assert_allclose(pooled[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert float(pooled[0] @ torch_embedder.encode([parts[0]])[0]) < 0.99  # not the part embedded alone

    fast = load_embedder(openvino_config(cache_dir), threads=2, bulk=True)
    fast_vectors, fast_pooled = fast.encode_with_parts(texts, parts, batch_size=2)
    assert set(fast_pooled) == {0}
    assert (fast_vectors * vectors).sum(axis=1).min() >= 0.9999
    assert float(fast_pooled[0] @ pooled[0]) >= 0.9999
