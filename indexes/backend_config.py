"""Vector backend settings, kept apart from the backends so loading a config imports neither library."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from core.strict import StrictModel


class FaissConfig(StrictModel):
    """FAISS on local (or shared) disk. Inner product on normalised vectors, i.e. cosine."""

    kind: Literal["faiss"] = "faiss"
    index_type: Literal["flat", "hnsw", "ivf_pq"] = "flat"
    hnsw_m: PositiveInt = 32
    ef_construction: PositiveInt = 80
    ef_search: PositiveInt = 64
    # IVF-PQ. nlist/nprobe null: derived from the index size when it is trained (`ivf_shape`),
    # and recorded resolved in the index's meta
    nlist: PositiveInt | None = None
    pq_m: PositiveInt = 16
    pq_nbits: Annotated[int, Field(ge=4, le=12)] = 8
    nprobe: PositiveInt | None = None
    # IVF-PQ's candidates are re-scored on stored vectors: fp16 (2 bytes a dimension, scores within
    # ~1e-3 of exact), flat (exact, 4 bytes), or null (PQ scores alone: a sixteenth of the memory,
    # and recall@10 0.017 at 1M vectors). SQ8 was tried: its rounding capped recall@10 at 0.954
    refine: Literal["fp16", "flat"] | None = "fp16"
    refine_candidates: PositiveInt = 1000  # re-scored per query (at least 2 x k): PQ's ranking is coarse
    # IVF-PQ: shards encoded in parallel Ray tasks and merged on the driver (flat and HNSW are built
    # on the driver as the job's chunks pass: a copy, and graphs that cannot be merged)
    shards: PositiveInt = 2

    @property
    def label(self) -> str:
        return f"faiss-{self.index_type}"

    def build_settings(self) -> dict:
        """The settings an index of this type is built with: a change to any of them needs a new
        build, a change to another (`shards`, or IVF-PQ's settings under a flat index) does not."""
        kept = {"flat": (), "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
                "ivf_pq": ("nlist", "pq_m", "pq_nbits", "nprobe", "refine", "refine_candidates")}[self.index_type]  # fmt: skip
        return self.model_dump(include={"kind", "index_type", *kept})


class QdrantConfig(StrictModel):
    """Qdrant: embedded (a directory inside each version) unless a server URL is given."""

    kind: Literal["qdrant"] = "qdrant"
    url: str | None = None
    api_key_env: str | None = Field(default=None, description="name of the env var holding the API key")
    collection_prefix: str = "rayrag"
    upsert_batch: PositiveInt = 512

    @property
    def label(self) -> str:
        return "qdrant-server" if self.url else "qdrant-embedded"

    def build_settings(self) -> dict:
        return self.model_dump()

    @model_validator(mode="after")
    def _key_needs_url(self) -> QdrantConfig:
        if self.api_key_env and not self.url:
            raise ValueError("api_key_env is only used with a server url")
        return self


BackendConfig = Annotated[FaissConfig | QdrantConfig, Field(discriminator="kind")]
