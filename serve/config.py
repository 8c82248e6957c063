"""Typed serving arguments: what `build_app(args)` accepts, from Hydra or a Serve config file.

Plain dataclasses with no Hydra or Ray imports; `cluster/serve.py` composes `conf/serve.yaml`
against them, and `serve deploy` passes the same fields as a dict of `args`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

DTYPES = ("auto", "fp32", "bf16", "fp16")


class ServeConfigError(ValueError):
    """A serving argument is not allowed; the message names the field."""


def _check(ok: bool, key: str, allowed: str, value: object) -> None:
    if not ok:
        raise ServeConfigError(f"{key}={value!r} is not allowed: {allowed}")


@dataclass
class AutoscalingSpec:
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0  # per replica; above it Serve adds replicas
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 60.0
    metrics_interval_s: float = 2.0  # how often replicas report their load
    look_back_period_s: float = 10.0  # window the load is averaged over

    def __post_init__(self) -> None:
        _check(
            self.min_replicas >= 0,
            "serve.autoscaling.min_replicas",
            "must be >= 0",
            self.min_replicas,
        )
        _check(
            self.max_replicas >= max(1, self.min_replicas),
            "serve.autoscaling.max_replicas",
            f"must be >= max(1, min_replicas={self.min_replicas})",
            self.max_replicas,
        )
        _check(
            self.target_ongoing_requests > 0,
            "serve.autoscaling.target_ongoing_requests",
            "must be > 0",
            self.target_ongoing_requests,
        )


@dataclass
class ServeArgs:
    model_dir: str = ""  # a Hugging Face export directory
    model_name: str | None = None  # id in /v1/models; None = the export's folder name
    dtype: str = "auto"  # auto = bf16 on GPUs that support it, else fp32
    max_context: int | None = None  # prompt + max_tokens cap; None = the model's positions
    max_tokens_limit: int = 512  # largest max_tokens a request may ask for
    default_max_tokens: int = 16  # when a request gives none (OpenAI's default)
    max_batch_size: int = 16  # most requests decoding together (continuous batching)
    batch_wait_timeout_s: float = 0.0  # an idle replica waits this long for arrivals
    stream_interval_s: float = 0.02  # tokens decoded within this window reach clients together
    max_ongoing_requests: int = 32  # per replica: generating or waiting for a batch slot
    max_queued_requests: int = 64  # per replica beyond max_ongoing: 429 + Retry-After past it
    retry_after_s: int = 1  # Retry-After sent with 429
    max_body_bytes: int = 1_000_000  # larger request bodies get 413
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica
    api_key: str | None = None  # None = no auth; see api_key_env
    api_key_env: str = "ZERORAY_API_KEY"  # read when api_key is None and the variable is set
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)

    def __post_init__(self) -> None:
        if isinstance(self.autoscaling, dict):  # from a Serve config file's args
            self.autoscaling = AutoscalingSpec(**self.autoscaling)
        _check(self.dtype in DTYPES, "serve.dtype", "one of " + ", ".join(DTYPES), self.dtype)
        for key in (
            "max_tokens_limit",
            "default_max_tokens",
            "max_batch_size",
            "max_ongoing_requests",
            "max_body_bytes",
        ):
            _check(getattr(self, key) > 0, f"serve.{key}", "must be > 0", getattr(self, key))
        _check(
            self.batch_wait_timeout_s >= 0,
            "serve.batch_wait_timeout_s",
            "must be >= 0",
            self.batch_wait_timeout_s,
        )
        _check(
            self.max_queued_requests >= 0,
            "serve.max_queued_requests",
            "must be >= 0",
            self.max_queued_requests,
        )
        _check(
            self.max_context is None or self.max_context > 0,
            "serve.max_context",
            "must be > 0 or null",
            self.max_context,
        )
        _check(
            self.num_cpus >= 0 and self.num_gpus >= 0,
            "serve.num_cpus/num_gpus",
            "must be >= 0",
            (self.num_cpus, self.num_gpus),
        )

    @classmethod
    def from_dict(cls, args: dict) -> ServeArgs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ServeConfigError(
                f"{unknown[0]}: unknown serving argument; allowed: " + ", ".join(sorted(known))
            )
        return cls(**args)
