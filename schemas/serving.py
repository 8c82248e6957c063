"""Config section of a Serve replica: what `serve.deployment.build_app(args)` accepts, from
Hydra (`make serve`) or as the `args` dict of a Serve config file (`serve deploy`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from schemas.fields import ConfigError, at_least, one_of, positive, require, setting
from schemas.precision import PRECISIONS

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str | None) -> bool:
    """Only this machine can reach ``host``; an unknown host (None) is taken as beyond it."""
    return host in LOOPBACK_HOSTS


@dataclass
class AutoscalingConfig:
    min_replicas: int = setting(1, "fewest replicas (0 lets an idle app scale to zero)")
    max_replicas: int = setting(2, "most replicas")
    target_ongoing_requests: float = setting(
        8.0, "per-replica load Serve scales towards; above it, replicas are added"
    )
    upscale_delay_s: float = setting(10.0, "how long load must stay high before scaling up")
    downscale_delay_s: float = setting(60.0, "how long load must stay low before scaling down")
    metrics_interval_s: float = setting(2.0, "how often replicas report their load")
    look_back_period_s: float = setting(10.0, "window the load is averaged over")

    def __post_init__(self) -> None:
        at_least("serve.autoscaling.min_replicas", self.min_replicas, 0)
        require(
            self.max_replicas >= max(1, self.min_replicas),
            "serve.autoscaling.max_replicas",
            f"must be >= max(1, min_replicas={self.min_replicas})",
            self.max_replicas,
        )
        positive("serve.autoscaling.target_ongoing_requests", self.target_ongoing_requests)


@dataclass
class LoraServeConfig:
    """LoRA adapters served beside the base export (serve/adapters.py): each answers to its
    own model id in the OpenAI API, and rows of every adapter decode in one batch."""

    adapters: dict[str, str] = setting(
        factory=dict,
        help="adapter name (its model id) -> peft adapter directory, loaded at start",
    )
    adapter_dir: str | None = setting(
        None,
        "folder scanned on demand (vLLM's filesystem resolver): a request for model <name> "
        "loads <adapter_dir>/<name> when no adapter of that name is loaded; null = none",
    )
    allowed_roots: list[str] = setting(
        factory=lambda: ["runs"],
        help="POST /v1/load_lora_adapter reads lora_path only under these folders "
        "(relative ones from the working directory `make serve` ran in)",
    )
    max_loras: int = setting(4, "most distinct adapters decoding in one batch (vLLM's max_loras)")
    max_loaded: int = setting(
        8,
        "most adapters held by a replica; loading one more evicts the least recently used "
        "that no request is using",
    )

    def __post_init__(self) -> None:
        positive("serve.lora.max_loras", self.max_loras)
        positive("serve.lora.max_loaded", self.max_loaded)
        require(
            len(self.adapters) <= self.max_loaded,
            "serve.lora.adapters",
            f"at most serve.lora.max_loaded={self.max_loaded} adapters",
            sorted(self.adapters),
        )
        for name in self.adapters:
            require(
                bool(name) and "/" not in name and ":" not in name,
                "serve.lora.adapters",
                "names without '/' or ':' (a name is a model id)",
                name,
            )


@dataclass
class ServeConfig:
    model_dir: str = setting(
        "",
        "the Hugging Face export directory a replica loads, or its URI (s3://, gs://...): "
        "each replica's node fetches it once, checked against its manifest",
    )
    model_name: str | None = setting(None, "model id in /v1/models; null = the export's folder")
    lineage_id: str | None = setting(
        None,
        "where the export came from, shown on its /v1/models entry: the lineage id of the "
        "`make pipeline` stage that made it (its manifest, runs/pipelines/); null = none",
    )
    dtype: str = setting(
        "auto", "auto (bf16 on GPUs that support it, else fp32) | " + " | ".join(PRECISIONS[1:])
    )
    max_context: int | None = setting(
        None, "cap on prompt + max_tokens; null = the model's positions"
    )
    max_tokens_limit: int = setting(512, "largest max_tokens a request may ask for")
    default_max_tokens: int = setting(16, "max_tokens of a request that gives none (OpenAI's)")
    max_batch_size: int = setting(16, "most requests decoding together (continuous batching)")
    batch_wait_timeout_s: float = setting(
        0.0, "an idle replica waits this long for more arrivals before its first prefill"
    )
    stream_interval_s: float = setting(
        0.05,
        "tokens decoded within this window reach clients together (a request's first token "
        "goes out at once)",
    )
    access_log: bool = setting(
        False, "Serve's access-log line per request (costs throughput; see BENCHMARKS.md)"
    )
    max_batch_tokens: int = setting(
        65_536,
        "KV-cache budget of the running batch: rows x the widest row's prompt + max_tokens "
        "(rows are padded to the widest); a prompt that would exceed it waits, one that "
        "alone exceeds it gets 400",
    )
    max_ongoing_requests: int = setting(
        32, "per replica: prompts generating or waiting for a batch slot (k prompts count k)"
    )
    max_queued_requests: int = setting(
        64, "per replica, beyond max_ongoing_requests; past both, 429 with Retry-After"
    )
    max_admitted_tokens: int = setting(
        262_144,
        "per replica: prompt + max_tokens summed over the prompts admitted and not finished; "
        "past it, 429 with Retry-After",
    )
    max_scored_tokens: int = setting(
        65_536,
        "per replica: prompt tokens whose log-probabilities are being computed (echo with "
        "logprobs), summed over the admitted prompts; past it, 429 with Retry-After, and a "
        "request over it alone gets 400. Each prompt is scored a slice of positions at a "
        "time, but its answer holds 1 + logprobs entries per token",
    )
    max_tokenize_tokens: int = setting(
        32_768,
        "most ids /tokenize returns and /detokenize takes (a longer text gets 400, refused "
        "from its head); above the context, since lm-eval's rolling log-likelihood "
        "tokenizes whole documents",
    )
    max_prompts_per_request: int = setting(
        64, "most rows one request adds: prompts of a /v1/completions request x its n"
    )
    max_n: int = setting(8, "most choices (n) per prompt; each is its own row of the running batch")
    retry_after_s: int = setting(1, "Retry-After seconds sent with a 429")
    max_body_bytes: int = setting(1_000_000, "larger request bodies get 413")
    num_cpus: float = setting(1.0, "CPUs per replica (its torch threads)")
    num_gpus: float = setting(0.0, "GPUs per replica")
    api_key: str | None = setting(
        None,
        "bearer key clients must send; null = see api_key_env. `make serve` hands the key "
        "it found to the replicas here; never shown in a printed or logged config",
        repr=False,
    )
    api_key_env: str = setting(
        "ZERORAY_API_KEY",
        "environment variable a replica reads for the key when api_key is null (on a "
        "cluster: a Kubernetes Secret's env var, deploy/kuberay/rayservice.yaml)",
    )
    allow_unauthenticated: bool = setting(
        False,
        "let a replica whose Serve listens beyond loopback start with no key (it refuses "
        "otherwise); `make serve` copies its allow_unauthenticated here",
    )
    autoscaling: AutoscalingConfig = setting(
        factory=AutoscalingConfig, help="replica range and how Serve scales within it"
    )
    lora: LoraServeConfig = setting(
        factory=LoraServeConfig, help="LoRA adapters served beside the base export"
    )

    def __post_init__(self) -> None:
        if isinstance(self.autoscaling, dict):  # from a Serve config file's args
            self.autoscaling = AutoscalingConfig(**self.autoscaling)
        if isinstance(self.lora, dict):
            self.lora = LoraServeConfig(**self.lora)
        one_of("serve.dtype", self.dtype, PRECISIONS)
        for key in (
            "max_tokens_limit",
            "default_max_tokens",
            "max_batch_size",
            "max_ongoing_requests",
            "max_body_bytes",
            "max_batch_tokens",
            "max_admitted_tokens",
            "max_scored_tokens",
            "max_tokenize_tokens",
            "max_prompts_per_request",
            "max_n",
        ):
            positive(f"serve.{key}", getattr(self, key))
        at_least("serve.batch_wait_timeout_s", self.batch_wait_timeout_s, 0)
        # 0 would decode no step per round: the decode loop would spin and never answer.
        positive("serve.stream_interval_s", self.stream_interval_s)
        positive("serve.retry_after_s", self.retry_after_s)
        at_least("serve.max_queued_requests", self.max_queued_requests, 0)
        require(
            self.max_context is None or self.max_context > 0,
            "serve.max_context",
            "must be > 0 or null",
            self.max_context,
        )
        require(
            self.num_cpus >= 0 and self.num_gpus >= 0,
            "serve.num_cpus/num_gpus",
            "must be >= 0",
            (self.num_cpus, self.num_gpus),
        )

    @classmethod
    def from_dict(cls, args: dict) -> ServeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: unknown serving argument; allowed: " + ", ".join(sorted(known))
            )
        return cls(**args)
