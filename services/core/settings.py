"""Service settings: defaults in code, an optional YAML file, `HYBRID_...` environment overrides.

Read once at start (`load_settings`) and passed down as sections; no module reads the environment itself.
Precedence, highest first: explicit overrides, environment (`HYBRID_RAG__TOP_K=8`,
`HYBRID_RAG__FUSION__RRF_K=10`), YAML file, defaults. `generator` and `fallback_generator` hold the fields
of their `backend` only: a field of another backend is an error, as is any unknown key.
"""

from __future__ import annotations

from contextvars import ContextVar
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from services.core.cpus import available_cpu_count
from services.core.errors import ConfigError
from services.core.privacy_settings import PrivacySettings
from services.core.types import Trust


class Section(BaseModel):
    # A misspelt key in YAML or env must fail loudly rather than be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_messages: int = Field(64, ge=1)
    max_prompt_tokens: int = Field(4096, ge=16)
    max_completion_tokens: int = Field(1024, ge=1)
    request_timeout_s: float = Field(120.0, gt=0)
    shutdown_grace_s: float = Field(20.0, ge=0)
    adapter_watch_interval_s: float = Field(
        2.0,
        ge=0,
        description="seconds between checks for adapter versions published by POST /admin/adapters "
        "(adapter_versions_dir), so every worker loads them; 0 disables",
    )
    adapter_versions_dir: Path | None = Field(
        None,
        description="where POST /admin/adapters publishes adapter versions for every worker and replica "
        "sharing it; default <data_dir>/adapter-versions",
    )


class BaseGeneratorSettings(Section):
    """What every generator backend shares; `GeneratorSettings` picks the backend's own model by `backend`.

    `model` is a packaged alias (`smollm2`, `qwen2.5-coder-0.5b`, `qwen2.5-coder-1.5b`), a Hugging Face id,
    a local HF folder, or a `.gguf` file. For the `openai` backend it is the served model name upstream.
    """

    name: str = "local"
    model: str = "smollm2"
    trust: Trust = "internal"
    # Intra-op threads. The default is the cores this process may use (affinity and cgroup quota): the
    # library's own default (0) may start more threads than the process has cores, which then contend with
    # each other and with the event loop. 0 keeps the library default.
    threads: int = Field(default_factory=available_cpu_count, ge=0)
    max_concurrency: int = Field(1, ge=1, description="generations running at once in this process")
    max_queue: int = Field(32, ge=0, description="requests waiting for a slot before 503")
    timeout_s: float = Field(120.0, gt=0)
    # LoRA adapters: served name -> folder (transformers/onnx) or upstream model name (openai).
    adapters: dict[str, str] = Field(default_factory=dict)


GraphOptimization = Literal["disable_all", "basic", "extended", "all"]  # ONNX Runtime's levels


class OnnxGeneratorSettings(BaseGeneratorSettings):
    backend: Literal["onnx"] = "onnx"
    # Precision the ONNX Runtime GenAI builder converts to. int8 is the embedded default: on the handbook
    # eval it kept transformers bf16's answer quality where int4 lost much of it
    # (benchmarks/results/generator.md).
    onnx_precision: Literal["int4", "int8", "fp32"] = "int8"
    # With max_concurrency > 1, requests are decoded together in batches of up to max_concurrency
    # (services/llm/onnx_batching.py). An idle engine waits at most this long for the companions it expects
    # (other requests holding a place) before a batch starts; a lone request starts at once.
    batch_window_ms: float = Field(25.0, ge=0, le=1000)
    batch_scheduler: Literal["cohort", "engine"] = Field(
        "cohort",
        description="how batches run with max_concurrency > 1: `cohort`, one batched og.Generator per group "
        "of requests that start together (services/llm/onnx_cohort.py), or `engine`, onnxruntime-genai's "
        "og.Engine (services/llm/onnx_batching.py); benchmarks/results/batching_micro.md compares them",
    )
    # ONNX Runtime session options of the decoder (benchmarks/results/ttft.md compares them side by side).
    intra_op_spinning: bool = Field(
        True,
        description="intra-op threads busy-wait for work between operators instead of sleeping "
        "(session.intra_op.allow_spinning); off leaves the cores to other work but slows decoding",
    )
    inter_op_spinning: bool = Field(
        True,
        description="inter-op threads busy-wait for work instead of sleeping "
        "(session.inter_op.allow_spinning)",
    )
    graph_optimization: GraphOptimization = Field(
        "all", description="ONNX Runtime graph optimisation level applied when the model loads"
    )
    # onnxruntime-genai's Python binding holds the GIL through a whole prefill or decode step, which stops
    # the event loop (services/llm/oga_native.py): drive those calls through its C API instead.
    release_gil: bool = Field(
        True,
        description="run the generator's prefill and decode steps without holding Python's GIL, so the "
        "server keeps serving other work while a request computes; off uses the binding's own calls",
    )
    # Finished generators are kept so that a later prompt sharing their prefix (a pipeline's system prompt,
    # a conversation's earlier turns) prefills only the rest (services/llm/onnx_prefix_cache.py).
    prefix_cache_slots: int = Field(
        4,
        ge=0,
        le=64,
        description="generators kept for prompt-prefix reuse; each holds a KV buffer of prefix_cache_tokens "
        "(about 45 MB for SmolLM2 at 1024); 0 turns the cache off",
    )
    prefix_cache_tokens: int = Field(
        1024,
        ge=16,
        description="the KV buffer of a kept generator: requests whose prompt plus max_tokens exceed it "
        "run on a fresh generator",
    )


class TransformersGeneratorSettings(BaseGeneratorSettings):
    backend: Literal["transformers"] = "transformers"
    # torch dtype; `auto` picks bf16 where the CPU supports it.
    dtype: Literal["auto", "bf16", "fp32"] = "auto"


class OpenAIGeneratorSettings(BaseGeneratorSettings):
    backend: Literal["openai"] = "openai"
    base_url: str | None = None
    api_key: str | None = None
    max_retries: int = Field(2, ge=0)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value


def _backend_of(value: Any) -> str:
    # A section that names no backend is the default one (onnx), as it was before backends had own models.
    if isinstance(value, dict):
        return str(value.get("backend", "onnx"))
    return str(getattr(value, "backend", "onnx"))


GeneratorSettings = Annotated[
    Annotated[OnnxGeneratorSettings, Tag("onnx")]
    | Annotated[TransformersGeneratorSettings, Tag("transformers")]
    | Annotated[OpenAIGeneratorSettings, Tag("openai")],
    Discriminator(_backend_of),
]
GENERATOR_BACKENDS = ("onnx", "transformers", "openai")


class ChunkingSettings(Section):
    tokens: int = Field(256, ge=32, le=512)
    overlap: int = Field(32, ge=0)


class FaissSettings(Section):
    exact_search_max_chunks: int = Field(50_000, ge=1, description="above this, FAISS builds `ann_index`")
    # The approximate index above exact_search_max_chunks (services/rag/faiss_store.py says when to pick
    # which); its search breadth is built into each index version.
    ann_index: Literal["hnsw", "ivf", "ivf_sq8"] = "hnsw"
    hnsw_ef_search: int = Field(64, ge=1)
    ivf_nprobe: int = Field(16, ge=1)


class QdrantSettings(Section):
    url: str | None = None
    shards: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)


class FusionSettings(Section):
    """How the dense and the sparse (BM25) rankings become one."""

    method: Literal["rrf", "weighted", "dense", "sparse"] = "rrf"
    rrf_k: int = Field(60, ge=1)
    dense_weight: float = Field(0.5, ge=0, le=1)
    dense_k: int = Field(30, ge=1)
    sparse_k: int = Field(30, ge=1)


class RerankSettings(Section):
    reranker: str = Field("none", description="none | mmr | a CrossEncoder id or folder")
    candidates: int = Field(20, ge=1)


class ContextSettings(Section):
    # What the prompt carries: `evidence`, the sentences of the top evidence.candidates chunks that answer
    # the question (services/rag/evidence.py), or `chunks`, whole chunks under budget_tokens.
    # benchmarks/results/grounding.md compares them.
    mode: Literal["evidence", "chunks"] = "evidence"
    budget_tokens: int = Field(450, ge=32, description="token budget of whole chunks (mode: chunks)")


class EvidenceSettings(Section):
    candidates: int = Field(6, ge=1, description="chunks evidence is selected from")
    budget_tokens: int = Field(160, ge=16)
    neighbours: int = Field(0, ge=0, description="units added on each side of a picked one")


class GroundingSettings(Section):
    # What happens to an answer whose groundedness (services/rag/groundedness.py) is below the
    # threshold: `pass` reports the score, `flag` marks it in hybrid.groundedness, `extract` answers with
    # the best evidence sentence, quoted, and its source (the answer is then held back until checked).
    unsupported_answer: Literal["pass", "flag", "extract"] = "extract"
    threshold: float = Field(0.6, ge=0, le=1)
    # The first N evidence lines as the prompt shows them (best source first). The best unit alone holds
    # the answer less often than the best two (benchmarks/results/grounding.md).
    extract_quote_units: int = Field(2, ge=1, le=5, description="evidence lines an extract quotes")


class RelevanceSettings(Section):
    """When the index likely does not know the topic, and what the rag pipeline does then."""

    min_dense_score: float = Field(0.25, ge=-1, le=1)
    no_answer: Literal["say_so", "generate"] = "say_so"


class PathFieldSettings(Section):
    """The file path's words (`dev/pull-requests.md` -> "dev pull requests") as a BM25 field of its own."""

    enabled: bool = Field(False, description="search the path words too and fuse that ranking in")
    weight: float = Field(
        0.1, gt=0, description="weight of the path ranking in the fusion (chosen on the corpus/eval dev half)"
    )
    files: int = Field(5, ge=1, description="best-matching files whose chunks enter the path ranking")
    chunks_per_file: int = Field(2, ge=1, description="chunks per file, most similar to the query first")


class QueryRewriteSettings(Section):
    """A second retrieval with a rewritten query when the first one is not confident."""

    method: Literal["off", "prf"] = Field(
        "off", description="off, or prf: add the top chunks' heading and path terms (relevance feedback)"
    )
    below: float = Field(
        0.5, ge=-1, le=1, description="rewrite when the best chunk's cosine to the query is below this"
    )
    feedback_chunks: int = Field(3, ge=1, description="top chunks the expansion terms come from")
    terms: int = Field(5, ge=1, description="expansion terms added to the query")

    @field_validator("method", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value


class RagSettings(Section):
    index_dir: Path = Path("var/index")
    corpus_dirs: list[Path] = Field(default_factory=lambda: [Path("corpus/handbook")])
    embedder: str = "packaged:all-MiniLM-L6-v2"
    # Query embedding at serving time: "onnx" (ONNX Runtime, 1 thread, exported once to
    # <index_dir>/../embedder-cache) or "torch" (sentence-transformers). Same vectors, so the same index.
    embedder_engine: Literal["onnx", "torch"] = "onnx"
    ingest_embedder_engine: Literal["onnx", "torch"] = Field(
        "onnx",
        description="engine that embeds documents at ingestion: onnx (ONNX Runtime on every core the process "
        "may use, length-sorted batches) or torch (sentence-transformers); same vectors, so the same index",
    )
    vector_store: Literal["faiss", "qdrant"] = "faiss"
    top_k: int = Field(4, ge=1)
    # A LoRA adapter of the generator (a name in generator.adapters) used for rag answers only.
    adapter: str | None = None
    watch_interval_s: float = Field(2.0, ge=0, description="0 disables picking up new index versions")
    # When retrieval fails (index unavailable, embedder error): `fail` answers 503; `degrade` answers
    # without context through the `prompt` pipeline and says so in `hybrid.degraded`.
    on_failure: Literal["fail", "degrade"] = "fail"
    chunking: ChunkingSettings = ChunkingSettings()
    faiss: FaissSettings = FaissSettings()
    qdrant: QdrantSettings = QdrantSettings()
    fusion: FusionSettings = FusionSettings()
    rerank: RerankSettings = RerankSettings()
    context: ContextSettings = ContextSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    grounding: GroundingSettings = GroundingSettings()
    relevance: RelevanceSettings = RelevanceSettings()
    path_field: PathFieldSettings = PathFieldSettings()
    query_rewrite: QueryRewriteSettings = QueryRewriteSettings()


class RouterSettings(Section):
    model_dir: Path = Path("var/router")
    min_confidence: float = Field(0.55, ge=0, le=1)
    low_confidence_target: str = "rag"
    targets: dict[str, str] = Field(
        default_factory=lambda: {"direct": "prompt", "knowledge": "rag", "out_of_scope": "refuse"}
    )
    max_length: int = Field(64, ge=8)
    threads: int = Field(1, ge=1)
    # fp32 (model.onnx) or the int8 copy training writes beside it: 1.5-2x faster per query here, at the
    # accuracy cost that benchmarks/results/router_service.md measures (0.9 points on its test set).
    precision: Literal["fp32", "int8"] = "fp32"


class PromptSettings(Section):
    templates_dir: Path | None = None
    system_prompt: str = Field(
        "You are the assistant of {{ org_name }}'s internal help desk. Answer briefly and precisely.",
        description="a Jinja2 string; {{ org_name }} and {{ org_description }} come from the project section",
    )


# The example handbook's organisation: the defaults of the project section, and nowhere else.
EXAMPLE_ORG_NAME = "Larkspur Analytics"


class ProjectSettings(Section):
    """The documents and organisation this service answers for (`hybridllm init` writes one per folder).

    A config file with a `project` section belongs to a project folder: its relative paths are read
    relative to the file's own folder, so the folder can be moved (see `_resolve_project_paths`).
    """

    corpus: Path = Field(Path("corpus/handbook"), description="the folder of documents (markdown, HTML, PDF)")
    org_name: str = Field(EXAMPLE_ORG_NAME, min_length=1, description="the organisation the templates name")
    org_description: str = Field(
        f"{EXAMPLE_ORG_NAME}' policies, tools and processes",
        min_length=1,
        description="what the assistant answers questions about; the refusal names it",
    )
    router_recipe: Path | None = Field(None, description="router training YAML; default the packaged recipe")
    router_max_steps: int | None = Field(None, ge=1, description="caps router training steps (a quick trial)")

    def template_variables(self) -> dict[str, str]:
        """What the prompt templates may use besides their own variables."""
        return {"org_name": self.org_name, "org_description": self.org_description}


class PriceCard(Section):
    """Example prices for the cost ledger. They are EXAMPLES: set your own in YAML.

    cpu_core_hour_usd: a cloud vCPU-hour (about 0.04 USD on-demand in 2026).
    self_hosted_hour_usd: per generator name, the hourly price of the machine it runs on.
    external_per_million: per generator name, (input, output) USD per 1M tokens.
    """

    cpu_core_hour_usd: float = Field(0.04, ge=0)
    self_hosted_hour_usd: dict[str, float] = Field(default_factory=lambda: {"local": 0.08})
    external_per_million: dict[str, tuple[float, float]] = Field(default_factory=dict)


class AuthSettings(Section):
    enabled: bool = False
    # sha256 hex digests of accepted API keys, so the settings file holds no secret.
    api_key_sha256: list[str] = Field(default_factory=list)
    admin_key_sha256: list[str] = Field(default_factory=list)


class LimitsSettings(Section):
    """Per-API-key rate limits and daily budgets; 0 turns a limit off.

    All off by default: the always-on caps are the request-shape limits in `server` (body size, messages,
    prompt tokens, max_tokens). Daily budgets reset at 00:00 UTC. `backend: memory` counts per worker
    process; `redis` counts once for every worker and replica, in the Redis of `redis.url`.
    """

    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="memory: per worker; redis: shared by every worker and replica (needs redis.url)",
    )
    on_store_failure: Literal["allow", "deny"] = Field(
        "allow",
        description="when Redis does not answer: let the request pass (allow) or refuse it with 503 (deny)",
    )
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    tokens_per_day: int = Field(0, ge=0)
    usd_per_day: float = Field(0.0, ge=0)
    max_tracked_keys: int = Field(
        10_000, ge=1, description="memory backend: keys idle longest are forgotten beyond this"
    )


class RedisSettings(Section):
    """The Redis shared by every worker and replica, for rate limits and the response cache.

    One URL for both (`HYBRID_REDIS__URL=redis://host:6379/0`); unset means no Redis. Timeouts are short
    because a request waits on them: a slow store is treated as a failed one.
    """

    url: str | None = None
    connect_timeout_s: float = Field(0.5, gt=0)
    op_timeout_s: float = Field(0.25, gt=0)
    key_prefix: str = Field("hybrid:", min_length=1, description="namespaces this service's keys")
    failure_backoff_s: float = Field(
        1.0, ge=0, description="after a failed call, Redis is not asked again for this long (0: every call)"
    )

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix://, got {value!r}")
        return value


class SemanticCacheSettings(Section):
    threshold: float = Field(
        0.91, ge=0, le=1, description="cosine similarity a cached query needs to answer a new one"
    )


class CacheSettings(Section):
    """The response cache (services/cache): `exact` replays an answer to the same normalised conversation;
    `semantic` also to a paraphrase of its last user message whose numbers, negations, named entities
    and quantities are the same. The key holds pipeline, route, template, index and adapter versions and
    the generation parameters, so a new version of any of them never serves an old answer."""

    mode: Literal["off", "exact", "semantic"] = "off"
    store: Literal["memory", "redis"] = Field("memory", description="redis: shared by workers and replicas")
    ttl_s: float = Field(3600.0, gt=0, description="seconds an answer stays replayable")
    max_entries: int = Field(10_000, ge=1, description="memory store: least recently used beyond this go")
    cache_sampled: bool = Field(False, description="also cache answers sampled with temperature > 0")
    semantic: SemanticCacheSettings = SemanticCacheSettings()


class CircuitSettings(Section):
    """Circuit breaker on the primary generator when a fallback generator is configured."""

    enabled: bool = True
    failure_threshold: int = Field(5, ge=1, description="consecutive failures within window_s that open it")
    window_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(10.0, gt=0, description="open time before one probe request is let through")


class ObservabilitySettings(Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    log_prompts: bool = False
    otel_enabled: bool = False
    otel_endpoint: str = "http://127.0.0.1:4317"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYBRID_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("var")
    default_pipeline: str = "hybrid"
    server: ServerSettings = ServerSettings()
    generator: GeneratorSettings = OnnxGeneratorSettings()
    fallback_generator: GeneratorSettings | None = None
    rag: RagSettings = RagSettings()
    router: RouterSettings = RouterSettings()
    prompts: PromptSettings = PromptSettings()
    project: ProjectSettings = ProjectSettings()
    prices: PriceCard = PriceCard()
    privacy: PrivacySettings = PrivacySettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    redis: RedisSettings = RedisSettings()
    cache: CacheSettings = CacheSettings()
    circuit: CircuitSettings = CircuitSettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    @model_validator(mode="after")
    def _redis_limits_need_a_url(self) -> Settings:
        # A ConfigError (not a ValueError) leaves pydantic unwrapped, so the message reads as written.
        if self.limits.backend == "redis" and self.redis.url is None:
            raise ConfigError(
                "limits.backend is redis but redis.url is not set: set redis.url "
                "(HYBRID_REDIS__URL=redis://host:6379/0) or limits.backend: memory"
            )
        return self

    @model_validator(mode="after")
    def _redis_cache_needs_a_url(self) -> Settings:
        if self.cache.mode != "off" and self.cache.store == "redis" and self.redis.url is None:
            raise ConfigError(
                "cache.store is redis but redis.url is not set: set redis.url "
                "(HYBRID_REDIS__URL=redis://host:6379/0) or cache.store: memory"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: explicit overrides, the environment, the YAML file load_settings was given.
        return init_settings, env_settings, _YamlFileSource(settings_cls, yaml_file=_config_file.get())


# The YAML file of the load_settings call in progress (sources are built by the class, not the call).
_config_file: ContextVar[Path | None] = ContextVar("hybrid_config_file", default=None)


class _YamlFileSource(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, with errors that say which file is wrong and how."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            raw: object = super()._read_file(file_path)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file_path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {file_path} must hold a mapping at the top level")
        if "project" in raw:
            return _resolve_project_paths(raw, Path(str(file_path)).resolve().parent)
        return raw


# The path settings a project's config file may hold relative to its own folder. Other config files keep
# relative paths relative to the working directory, as before projects existed.
PROJECT_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("data_dir",),
    ("rag", "index_dir"),
    ("rag", "corpus_dirs"),
    ("router", "model_dir"),
    ("prompts", "templates_dir"),
    ("project", "corpus"),
    ("project", "router_recipe"),
    ("server", "adapter_versions_dir"),
)


def _resolve_project_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """`raw` with each relative path of PROJECT_PATH_KEYS made absolute against `base`."""

    def resolved(value: object) -> object:
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            return str(base / value)
        if isinstance(value, list):
            return [resolved(item) for item in value]
        return value

    out = dict(raw)
    for *parents, leaf in PROJECT_PATH_KEYS:
        section: Any = out
        for key in parents:
            if not isinstance(section.get(key), dict):
                break
            child = dict(section[key])  # a copy: the caller's mapping stays as read
            section[key] = child
            section = child
        else:
            if leaf in section and section[leaf] is not None:
                section[leaf] = resolved(section[leaf])
    return out


def _generator_error(error: ErrorDetails) -> tuple[str, str, object]:
    """(key, message, value) of an error inside a generator section, whose location carries the backend."""
    section, *rest = [str(part) for part in error["loc"]]
    value = error.get("input")
    if error["type"] == "union_tag_invalid":
        backend = value.get("backend") if isinstance(value, dict) else value
        return f"{section}.backend", f"must be one of {', '.join(GENERATOR_BACKENDS)}", backend
    if rest and rest[0] in GENERATOR_BACKENDS:
        backend, *rest = rest
        if error["type"] == "extra_forbidden" and len(rest) == 1:
            return ".".join([section, *rest]), f"not a setting of the {backend} backend", value
    return ".".join([section, *rest]), error["msg"], value


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    if first["loc"] and first["loc"][0] in ("generator", "fallback_generator"):
        key, message, got = _generator_error(first)
    else:
        key = ".".join(str(part) for part in first["loc"]) or "<root>"
        message, got = first["msg"], first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    more = len(error.errors()) - 1
    suffix = f"; and {more} more" if more else ""
    return f"invalid setting {key}: {message}{shown}{suffix}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, an optional YAML file and the environment; explicit overrides win."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    finally:
        _config_file.reset(token)


__all__ = [
    "GENERATOR_BACKENDS",
    "AuthSettings",
    "CacheSettings",
    "BaseGeneratorSettings",
    "ChunkingSettings",
    "CircuitSettings",
    "ContextSettings",
    "EvidenceSettings",
    "FaissSettings",
    "FusionSettings",
    "GeneratorSettings",
    "GroundingSettings",
    "LimitsSettings",
    "ObservabilitySettings",
    "OnnxGeneratorSettings",
    "OpenAIGeneratorSettings",
    "EXAMPLE_ORG_NAME",
    "PROJECT_PATH_KEYS",
    "PriceCard",
    "PrivacySettings",
    "ProjectSettings",
    "PromptSettings",
    "QdrantSettings",
    "RagSettings",
    "RelevanceSettings",
    "RerankSettings",
    "RouterSettings",
    "SemanticCacheSettings",
    "ServerSettings",
    "Settings",
    "TransformersGeneratorSettings",
    "load_settings",
]
