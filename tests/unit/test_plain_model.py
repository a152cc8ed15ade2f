"""A converted plain model starts without torch or sentence-transformers, and computes what they compute."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexes.embedder import Embedder, EmbedderConfig, load_embedder, resolve_model_path
from indexes.openvino_runtime import compile_for_cpu
from indexes.plain_model import PlainModel
from tests.conftest import REPO, SAMPLE_DIR
from tests.unit.conftest import openvino_config

pytestmark = pytest.mark.unit

MODEL = resolve_model_path("all-MiniLM-L6-v2")
ODD = ["  spaces around  ", "Café naïve — résumé 東京 😀", "x", "", "a\tb\r\nc", "word " * 400]


def sample_texts() -> list[str]:
    """Windows of the committed sample's text files (markup stripped), long and short: real chunks'
    vocabulary, many of them past max_seq_length, and the odd strings a tokenizer gets wrong first."""
    texts = list(ODD)
    for path in sorted(SAMPLE_DIR.rglob("*")):
        if path.suffix in {".md", ".html", ".txt"}:
            text = re.sub(r"<[^>]+>|\s+", " ", path.read_text(errors="replace"))
            texts += [text[start : start + width] for start in range(0, len(text), 1000) for width in (60, 1400)]
    return texts


def full_openvino(config: EmbedderConfig) -> Embedder:
    """The OpenVINO path with sentence-transformers' own tokenizer and torch modules around it."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(MODEL), device="cpu")
    model.max_seq_length = config.max_seq_length
    encoder = compile_for_cpu(model, MODEL, Path(config.openvino.cache_dir), config.openvino.precision, 2, False)
    return Embedder(config, model, encoder)


def test_the_plain_model_tokenizes_as_the_models_own_tokenizer(torch_embedder):
    texts = sample_texts()
    assert len(texts) > 80
    plain = PlainModel.open(MODEL, 256)
    model = torch_embedder.model
    for start in range(0, len(texts), 8):
        batch = texts[start : start + 8]
        ours, theirs = plain.preprocess(batch), model.preprocess(batch)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(ours[name], theirs[name].numpy(), err_msg=f"{name} of {batch[0][:40]!r}")
    for special in (True, False):
        expected = model.tokenizer(texts, add_special_tokens=special, verbose=False)["input_ids"]
        assert plain.token_ids(texts, special) == expected  # untruncated: parts and token counts


def test_a_converted_model_embeds_as_the_full_load_does(cache_dir, torch_embedder):
    config = openvino_config(cache_dir)
    quick, full = load_embedder(config), full_openvino(config)
    assert quick.model is None and quick.backend == "openvino" and full.model is not None
    assert quick.spec == full.spec == torch_embedder.spec and quick.precision == full.precision
    texts = sample_texts()
    ours, theirs = quick.encode(texts, batch_size=8), full.encode(texts, batch_size=8)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert (ours * torch_embedder.encode(texts, batch_size=8)).sum(axis=1).min() >= 0.9999
    parts = {0: "spaces around", 6: texts[6][:200].split(" ", 3)[-1][:80]}
    (_, pooled), (_, reference) = quick.encode_with_parts(texts[:8], parts), full.encode_with_parts(texts[:8], parts)
    assert set(pooled) == set(reference) and min(float(pooled[k] @ reference[k]) for k in pooled) >= 0.99999
    assert quick.count_tokens(texts) == full.count_tokens(texts)


def test_a_converted_model_starts_without_torch_or_sentence_transformers(cache_dir):
    """What an embed actor, a gateway replica or a CLI process pays to start: no torch import."""
    code = (
        "import sys\nfrom indexes.embedder import EmbedderConfig, load_embedder\n"
        f"e = load_embedder(EmbedderConfig(backend='openvino', openvino={{'cache_dir': {str(cache_dir)!r}}}))\n"
        "print(e.backend, e.encode(['hello world']).shape[1], e.count_tokens(['hello world']))\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["openvino 384 4", "[]"]


def _variant(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the packaged model with one file changed by `edit(model_dir)`."""
    copy = tmp_path / name
    shutil.copytree(MODEL, copy)
    edit(copy)
    return copy


def _rewrite(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


@pytest.mark.parametrize(
    "name, edit",
    [
        ("cls-pooling", lambda d: _rewrite(d / "1_Pooling/config.json", lambda c: c | {
            "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})),
        ("lower-cased-by-the-module", lambda d: _rewrite(d / "sentence_bert_config.json", lambda c: c | {
            "do_lower_case": True})),
        ("normaliser-contradicted", lambda d: _rewrite(d / "tokenizer_config.json", lambda c: c | {
            "do_lower_case": False})),
        ("a-dense-layer", lambda d: _rewrite(d / "modules.json", lambda m: [*m, {
            "idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}])),
        ("no-fast-tokenizer", lambda d: (d / "tokenizer.json").unlink()),
        ("padded-on-the-left", lambda d: _rewrite(d / "tokenizer_config.json", lambda c: c | {
            "padding_side": "left"})),
        ("another-hidden-state", lambda d: _rewrite(d / "sentence_bert_config.json", lambda c: c | {
            "module_output_name": "pooler_output"})),
    ],
)  # fmt: skip
def test_a_layout_the_plain_model_does_not_reproduce_is_left_to_sentence_transformers(tmp_path, name, edit):
    assert PlainModel.open(MODEL, 256) is not None
    assert PlainModel.open(_variant(tmp_path, name, edit), 256) is None


def test_a_model_it_does_not_read_loads_through_sentence_transformers_even_when_converted(tmp_path, cache_dir):
    """A converted model whose pooling the plain path would get wrong still embeds by its own modules."""
    from sentence_transformers import SentenceTransformer, models

    model = SentenceTransformer(str(MODEL), device="cpu")
    model.append(models.Dense(384, 64))
    model.save(str(tmp_path / "dense"))
    config = openvino_config(tmp_path / "cache", model=str(tmp_path / "dense"))
    load_embedder(config)  # converts
    again = load_embedder(config)
    assert again.backend == "openvino" and again.model is not None and again.spec.dim == 64
    expected = load_embedder(config.model_copy(update={"backend": "torch"})).encode(ODD[:3])
    assert (again.encode(ODD[:3]) * expected).sum(axis=1).min() >= 0.9999


def test_a_model_saved_by_this_sentence_transformers_is_read_too(tmp_path):
    """Saved again, the packaged model's configs are in the newer formats (`pooling_mode`, the
    Transformer module's task and output names)."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(MODEL), device="cpu").save(str(tmp_path / "resaved"))
    assert "pooling_mode" in json.loads((tmp_path / "resaved" / "1_Pooling" / "config.json").read_text())
    plain = PlainModel.open(tmp_path / "resaved", 256)
    assert plain is not None and plain.dim == 384
    texts = ODD[:3]
    np.testing.assert_array_equal(
        plain.preprocess(texts)["input_ids"], PlainModel.open(MODEL, 256).preprocess(texts)["input_ids"]
    )
