"""Strict settings of the index job (the `index_job:` section), one model per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from core.strict import CustomResources, StrictModel
from indexes.backend_config import BackendConfig, FaissConfig
from indexes.embedder import EmbedderConfig
from indexes.layout import validate_index_name

DEFAULT_EXTENSIONS = (".html", ".htm", ".md", ".markdown", ".txt", ".text", ".pdf", ".docx")
# Page chrome dropped from HTML before parsing: navigation bars, sidebars, footers, scripts.
DEFAULT_HTML_DROP = (
    "//nav | //header | //footer | //script | //style | //noscript | //*[@role='navigation']"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' footer ')]"
)


class SourceConfig(StrictModel):
    """What to read: a directory, a glob or a filesystem URI; null means the bundled default corpus."""

    path: str | None = None
    max_file_bytes: PositiveInt = 20_000_000
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    exclude: tuple[str, ...] = ()
    default_corpus_dir: Path = Path(".rayrag/corpus")

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() if v.startswith(".") else f".{v.lower()}" for v in values)


class ParseConfig(StrictModel):
    """The parse stage: unstructured partitioners, run by a pool of Ray actors."""

    # One: parsing is a few percent of a CPU job's work (the default corpus: 26 CPU-s against minutes
    # of embedding), a second actor only adds its start (3.6 s here, most of a one-file update) and
    # asks a third CPU of a 2-core machine. A GPU cluster, where embedding is fast, sets more
    # (configs/cluster/rayrag.yaml).
    concurrency: PositiveInt = 1
    num_cpus: NonNegativeFloat = 1
    resources: CustomResources = Field(default_factory=dict)  # e.g. {parse_node: 1}: CPU workers only
    pdf_strategy: Literal["fast"] = "fast"
    html_drop_xpath: str = DEFAULT_HTML_DROP
    html_text_heuristics: bool = Field(
        default=False,
        description="unstructured's spaCy narrative-text test on HTML/Markdown text; its verdict "
        "(NarrativeText or Text) never changes a chunk, and it is most of the parse time",
    )

    def demand(self) -> dict[str, float]:
        """What one parse actor needs of a node, in Ray's resource names."""
        return {"CPU": self.num_cpus, **self.resources}


class ChunkerConfig(StrictModel):
    """How documents become chunks; recorded in the manifest, so changing it forces a rebuild."""

    strategy: Literal["by_title", "window"] = "by_title"
    unit: Literal["chars", "tokens"] = "chars"
    size: PositiveInt = 1000
    overlap: NonNegativeInt = 150
    min_chars: NonNegativeInt = 40
    contextual: bool = Field(
        default=False,
        description="embed and BM25-index each chunk after its document title and section "
        "(indexes.store.indexed_text); the stored text and citations are unchanged",
    )
    lead_chars: PositiveInt | None = Field(
        default=350,
        description="store each chunk's vector as the mean of its embedding and its opening sentences' "
        "(up to this many characters, indexes.store.lead_text); null: the chunk's embedding alone",
    )
    lead_pooling: Literal["separate", "context"] = Field(
        default="separate",
        description="separate: each lead embedded alone, one more model call per chunk; context: a lead's "
        "vector is its tokens' mean in the chunk's own forward pass (no model call of its own: faster, "
        "but it kept less of the leads' gain on python-faq dev, bench/retrieval_sweep.py)",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkerConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class EmbedStageConfig(StrictModel):
    """The embed stage's actor pool: one model per actor, sharded over GPUs when num_gpus > 0.

    An actor takes `block_rows` chunk rows at a time and the embedder sorts them by length before
    cutting model calls of `batch_size` texts, so each call pads only to its own longest text. With a
    block no larger than the batch (as before), every call padded a random mix of chunks to its longest,
    about 256 tokens against a mean of 196 on the default corpus; sorted blocks embed it about 1.2x
    faster on 2 CPU cores, to the same vectors (bench/index_throughput.py measures the job). On CPU,
    where each OpenVINO stream is one thread, small calls are faster still: 4 texts embedded 46.1 chunks/s
    here against 44.6 with 8 and 42.4 with 16 (less padding, activations that stay in cache).
    """

    batch_size: PositiveInt = Field(default=4, description="texts per model call (a GPU wants more: 256)")
    block_rows: PositiveInt = Field(default=512, description="rows an embed actor sorts by length at once")
    concurrency: PositiveInt = 1
    num_gpus: NonNegativeFloat = 0
    num_cpus: NonNegativeFloat = 1
    resources: CustomResources = Field(default_factory=dict)  # e.g. {embed_node: 1}: GPU workers only
    torch_threads: PositiveInt | None = Field(default=None, description="default: all cores of the node")

    @model_validator(mode="after")
    def _block_holds_a_batch(self) -> EmbedStageConfig:
        if self.block_rows < self.batch_size:
            raise ValueError(
                f"block_rows ({self.block_rows}) is below batch_size ({self.batch_size}): no model call could be full"
            )
        return self

    def demand(self) -> dict[str, float]:
        """What one embed actor needs of a node, in Ray's resource names."""
        return {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}


class IndexJobConfig(StrictModel):
    """Everything one run of the index job decides: which index it writes, and each stage's settings.
    Where indexes live and what embeds them is the shared `indexes:` section (indexes/config.py)."""

    name: str = "pydocs"
    staging_dir: Path = Path(".rayrag/staging")  # a URI root's versions are built here, then uploaded
    keep_versions: PositiveInt = 3
    # URI roots: one job at a time, by a lease object (s3://) or a file lock (file://); see indexes/lease.py
    lease_s: PositiveFloat = 43_200.0  # a lease older than this is a killed job's, and is taken over
    single_writer: bool = False  # other URI schemes: you promise only one job writes the index
    source: SourceConfig = SourceConfig()
    parse: ParseConfig = ParseConfig()
    chunker: ChunkerConfig = ChunkerConfig()
    embed: EmbedStageConfig = EmbedStageConfig()
    backend: BackendConfig = FaissConfig()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_index_name(value)

    @field_validator("backend", mode="before")
    @classmethod
    def _faiss_unless_told(cls, value: object) -> object:
        """A backend section without `kind` means FAISS, like no section at all."""
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "faiss", **value}
        return value

    def check_chunks_fit(self, embedder: EmbedderConfig) -> None:
        """Token chunks longer than the model reads would be truncated, every one of them."""
        if self.chunker.unit == "tokens" and self.chunker.size > embedder.max_seq_length:
            raise ValueError(
                f"index_job.chunker.size ({self.chunker.size} tokens) exceeds indexes.embedder.max_seq_length "
                f"({embedder.max_seq_length}): the model would truncate every chunk"
            )
