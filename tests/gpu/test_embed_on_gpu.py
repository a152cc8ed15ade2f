"""The embed stage on a GPU: actors take `num_gpus` and the vectors match the CPU ones."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)


def test_index_job_embeds_on_the_gpu_like_on_the_cpu(tmp_path, sample_dir):
    import ray

    from indexes.embedder import EmbedderConfig, load_embedder
    from indexes.reader import IndexVersion
    from pipelines.index_job import run_index_job
    from pipelines.stages import chunk_vectors
    from rayrag.config import load_config

    ray.init(num_gpus=1, include_dashboard=False)
    try:
        updates = {
            "indexes.root": str(tmp_path),
            "index_job.name": "gpu",
            "index_job.embed.num_gpus": 1,
            "indexes.embedder.device": "cuda",
        }
        config = load_config(None, updates=updates)
        report = run_index_job(config, source=str(sample_dir))
    finally:
        ray.shutdown()
    version = IndexVersion.open_current(tmp_path, "gpu")
    chunks = list(version.store)[:32]
    places = [(c.text, c.title, c.section) for c in chunks]
    cpu = chunk_vectors(load_embedder(EmbedderConfig()), places, config.index_job.chunker)
    found, scores = version.vectors.search(cpu, 1)
    version.close()
    assert report.chunks.added > 30
    assert (found[:, 0] == np.array([c.vid for c in chunks])).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-3)
