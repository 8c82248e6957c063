"""The top-level config of each job, one per primary YAML in conf/ (its schema).

A job config is a set of sections plus the few settings of the run itself. Fine-tuning is
pretraining's run with its instruction data and the evaluation that ends it; preference
tuning (DPO) is fine-tuning on pairs with its own loss; LoRA is part of every training run
(off by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.batch import BatchPlan
from schemas.data import DataConfig, PreferenceConfig, SFTConfig, TokenizerConfig
from schemas.evaluation import EvalConfig
from schemas.fields import at_least, one_of, positive, require, setting
from schemas.planning import PlanConfig
from schemas.scaling import ScalingConfig
from schemas.serving import ServeConfig
from schemas.tracking import TrackingConfig
from schemas.training import (
    DeepSpeedConfig,
    DPOConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    TrainerConfig,
)

# What answers HTTP on a Serve cluster's port (ServeJobConfig.ingress).
INGRESSES = ("haproxy", "proxy")


def is_plain_name(name: str | None) -> bool:
    return bool(name) and not {"/", "\\"} & set(name) and name not in (".", "..")


@dataclass
class TrainJobConfig:
    experiment: str = setting("pretrain", "runs land in <output_dir>/<experiment>/<run_name>/")
    run_name: str | None = setting(
        None, "null = a new timestamp; naming an existing run is refused"
    )
    output_dir: str = setting(
        "runs", "where runs go: a local or shared path, or a storage URI (s3://, gs://...)"
    )
    cache_dir: str = setting(
        "cache",
        "this machine's own files: prepared datasets and tokenizers (keyed by a hash of their "
        "inputs; in prepared_dir when set), a URI run's local copy",
    )
    prepared_dir: str | None = setting(
        None,
        "where data is prepared and kept (pretraining, instruction and preference data, the "
        "evaluation's held-out text, DPO's reference scores): null = cache_dir; a storage "
        "URI (s3://, gs://...) when the nodes share no filesystem (each node fetches it once)",
    )
    prepared_copies_gib: float = setting(
        50.0,
        "prepared_dir a URI: the disk each node's copies of prepared data may take together "
        "(in its TMPDIR); the least recently used others are removed first",
    )
    seed: int = setting(1234, "model init, data order and sampling")
    num_samples: int = setting(3, "text samples generated from the export for the summary")
    max_failures: int = setting(
        2, "worker-group restarts from the newest checkpoint before giving up; -1 = unlimited"
    )
    resume: str | None = setting(
        None,
        "null | latest (newest complete checkpoint of this experiment) | PATH or URI (a run "
        "or step_* checkpoint directory); continues in a new run directory",
    )
    model: ModelConfig = setting(factory=ModelConfig, help="the causal LM: built or loaded")
    tokenizer: TokenizerConfig = setting(factory=TokenizerConfig, help="trained or pretrained")
    data: DataConfig = setting(factory=DataConfig, help="the pretraining corpus")
    deepspeed: DeepSpeedConfig = setting(factory=DeepSpeedConfig, help="ZeRO stage and offload")
    scaling: ScalingConfig = setting(
        factory=ScalingConfig, help="Ray Train workers and their resources"
    )
    optim: OptimConfig = setting(
        factory=OptimConfig, help="AdamW, linear warmup then cosine decay, clipping"
    )
    trainer: TrainerConfig = setting(factory=TrainerConfig, help="the training loop")
    lora: LoraConfig = setting(factory=LoraConfig, help="low-rank adapters instead of every weight")
    plan: PlanConfig = setting(
        factory=PlanConfig, help="memory, time and cost estimate (`make plan`), fit check"
    )
    tracking: TrackingConfig = setting(
        factory=TrackingConfig, help="experiment tracking: the job's one MLflow run, or none"
    )

    def __post_init__(self) -> None:
        # Both become directory names under output_dir: nothing that climbs out of it.
        for key, name in (("experiment", self.experiment), ("run_name", self.run_name)):
            require(
                (name is None and key == "run_name") or is_plain_name(name),
                key,
                "a non-empty name without '/', '\\' or '..'",
                name,
            )
        at_least("num_samples", self.num_samples, 0)
        positive("prepared_copies_gib", self.prepared_copies_gib)
        require(
            self.max_failures >= -1,
            "max_failures",
            "must be >= 0, or -1 for unlimited",
            self.max_failures,
        )
        if self.tokenizer.kind == "pretrained":
            require(
                bool(self.tokenizer.name_or_path or self.model.name_or_path),
                "tokenizer.name_or_path",
                "a path or hub id (or set model.name_or_path) for tokenizer=pretrained",
                None,
            )
        if not self.model.from_pretrained:
            require(
                self.trainer.seq_len <= self.model.max_position_embeddings,
                "trainer.seq_len",
                f"must be <= model.max_position_embeddings={self.model.max_position_embeddings}",
                self.trainer.seq_len,
            )
        if self.scaling.elastic:
            BatchPlan.of(self.trainer, self.scaling).check_elastic()
        if not self.derives_max_steps():  # else checked once max_steps is derived
            check_stop_at_step(self.trainer.stop_at_step, self.trainer.max_steps)
        if self.lora.enabled:
            require(
                self.deepspeed.stage < 3,
                "deepspeed.stage",
                "0, 1 or 2 with lora.enabled=true (the adapter is small: shard it with ZeRO-2)",
                self.deepspeed.stage,
            )

    def derives_max_steps(self) -> bool:
        """Whether trainer.max_steps is derived from the prepared data (fine-tuning epochs)."""
        return False


def check_one_translation_task(sft: SFTConfig, spec: EvalConfig) -> None:
    """sft=translation's held-out messages and eval.translation_paths' pairs would both be
    the report's translation section: one of them."""
    require(
        not (sft.source == "translation" and spec.translation_paths),
        "eval.translation_paths",
        "[] with sft=translation (its held-out messages are the translation task)",
        spec.translation_paths,
    )


def check_stop_at_step(stop_at_step: int | None, max_steps: int) -> None:
    if stop_at_step is not None:
        require(
            0 < stop_at_step <= max_steps,
            "trainer.stop_at_step",
            f"null or in 1..trainer.max_steps={max_steps}",
            stop_at_step,
        )


@dataclass
class FinetuneJobConfig(TrainJobConfig):
    experiment: str = setting("finetune", "runs land in <output_dir>/<experiment>/<run_name>/")
    epochs: float | None = setting(
        3.0, "passes over the training rows; sets trainer.max_steps (null = use max_steps)"
    )
    sft: SFTConfig = setting(factory=SFTConfig, help="the instruction data")
    eval: EvalConfig = setting(
        factory=EvalConfig, help="the evaluation of the base and the result that ends the run"
    )
    evaluate_at_end: bool = setting(
        True,
        "evaluate the starting model and the result side by side when the run ends "
        "(eval.json); false: only the summary (`make eval` evaluates an export any time)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs is not None:
            positive("epochs", self.epochs)
        check_one_translation_task(self.sft, self.eval)

    def derives_max_steps(self) -> bool:
        return self.epochs is not None


@dataclass
class DPOJobConfig(FinetuneJobConfig):
    experiment: str = setting("dpo", "runs land in <output_dir>/<experiment>/<run_name>/")
    epochs: float | None = setting(
        1.0, "passes over the training pairs; sets trainer.max_steps (null = use max_steps)"
    )
    pref: PreferenceConfig = setting(factory=PreferenceConfig, help="the preference pairs")
    dpo: DPOConfig = setting(factory=DPOConfig, help="the DPO loss")


@dataclass
class EvalJobConfig:
    export: str | None = setting(
        None,
        "export directory or storage URI to evaluate (each node fetches a URI once); null = "
        "the newest under output_dir",
    )
    output_dir: str = setting("runs", "searched for the newest export when export is null")
    cache_dir: str = setting("cache", "the held-out text, tokenized once per export tokenizer")
    prepared_dir: str | None = setting(
        None,
        "where the held-out text is kept instead: null = cache_dir; a storage URI (s3://, "
        "gs://...) when the evaluating node may share no filesystem with this one",
    )
    seed: int = setting(1234, "sampling seed")
    output: str | None = setting(
        None,
        "report path; null = eval.json beside the export (eval-export.json when eval.json is "
        "a run's side-by-side report; an export at a URI: eval-<run>.json in output_dir; "
        "endpoint: endpoint_eval.json in output_dir)",
    )
    endpoint: str | None = setting(
        None,
        "a running OpenAI-compatible endpoint (http://HOST:8000/v1) to evaluate with the "
        "eval.lm_eval tasks instead of an export: log-likelihood tasks through /completions, "
        "generation tasks through /chat/completions",
    )
    endpoint_model: str | None = setting(
        None,
        "with endpoint: the model id to evaluate (a LoRA adapter's name, as /v1/models lists "
        "it); null = the first it lists (the base)",
    )
    api_key_env: str = setting(
        "ZERORAY_API_KEY", "environment variable holding the endpoint's API key, if it has one"
    )
    allow_plain_http_key: bool = setting(
        False,
        "send the endpoint's key over plain http:// to a non-loopback host (refused otherwise: "
        "anyone on the path reads it; use https or an ssh -L tunnel)",
    )
    data: DataConfig = setting(
        factory=DataConfig, help="held-out text (its validation split) for perplexity"
    )
    sft: SFTConfig = setting(factory=SFTConfig, help="QA data: its held-out split is evaluated")
    eval: EvalConfig = setting(factory=EvalConfig, help="what is generated and measured")

    def __post_init__(self) -> None:
        check_one_translation_task(self.sft, self.eval)
        if self.endpoint is not None:
            require(
                self.endpoint.startswith(("http://", "https://"))
                and self.endpoint.rstrip("/").endswith("/v1"),
                "endpoint",
                "an http(s) URL of an OpenAI-compatible API ending in /v1",
                self.endpoint,
            )


@dataclass
class ServeJobConfig:
    checkpoint: str | None = setting(
        None, "export directory or storage URI to serve; null = the newest under output_dir"
    )
    output_dir: str = setting("runs", "searched for the newest export when checkpoint is null")
    cache_dir: str = setting("cache", "where an export named by URI is downloaded (once)")
    host: str = setting("127.0.0.1", "where Serve's HTTP proxy listens (0.0.0.0: every interface)")
    port: int = setting(8000, "HTTP port of Serve's proxy")
    app_name: str = setting("zeroray", "the Serve application's name")
    allow_unauthenticated: bool = setting(
        False, "serve on a non-loopback host with no API key (`make serve` refuses otherwise)"
    )
    ingress: str = setting(
        "haproxy",
        "what answers on `port` and balances across replicas, for a cluster this command "
        "starts (a cluster of its own: its nodes' environment, cluster.serve.ingress_env): "
        "haproxy (Ray Serve's HAProxy ingress, forwarding HTTP straight to each replica's "
        "own port) | proxy (Serve's Python HTTP proxy; docs/serving.md has the figures)",
    )
    throughput_optimized: bool = setting(
        True,
        "for a cluster this command starts: Ray Serve's throughput-optimized mode (each "
        "replica answers HTTP on a port of its own, printed, and runs its code on its "
        "request loop); the haproxy ingress forwards to those ports either way",
    )
    blocking: bool = setting(
        True, "keep serving until Ctrl-C (a local cluster lives with this process)"
    )
    serve: ServeConfig = setting(factory=ServeConfig, help="what each replica serves, and how")

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, "port", "must be in 1..65535", self.port)
        one_of("ingress", self.ingress, INGRESSES)


# The kinds of stage a pipeline has: the jobs above, and serve-config (`make serve-config`).
# What each takes and makes: cluster/stages/graph.py.
STAGE_KINDS = ("prepare", "train", "finetune", "dpo", "eval", "serve-config")


@dataclass
class StageConfig:
    job: str = setting("???", "the stage's kind: " + " | ".join(STAGE_KINDS))
    inputs: dict[str, str] = setting(
        factory=dict,
        help="input name -> STAGE.OUTPUT of an earlier stage (train: data; finetune, dpo: "
        "base; eval, serve-config: export), resolved when the pipeline runs to the path that "
        "stage's manifest records",
    )
    overrides: list[str] = setting(
        factory=list, help="the job's own overrides, as on its command line (key=value ...)"
    )


@dataclass
class PipelineConfig:
    name: str = setting(
        "default",
        "the pipeline's name: its manifests go to <output_dir>/pipelines/<name>/, its runs "
        "are named <name>-<stage>-<time>",
    )
    output_dir: str = setting("runs", "every stage's output_dir (a local or shared path)")
    cache_dir: str = setting("cache", "every stage's cache_dir (prepared data, tokenizers)")
    stages: dict[str, StageConfig] = setting(
        factory=dict,
        help="stage name -> its job, inputs and overrides; run in the order their inputs "
        "need, else as listed; a stage whose config and inputs equal its finished manifest's "
        "is skipped",
    )
    tracking: TrackingConfig = setting(
        factory=TrackingConfig,
        help="one parent MLflow run per invocation, each stage's run its child; the "
        "training stages track into the same store (none: no stage tracks)",
    )

    def __post_init__(self) -> None:
        require(is_plain_name(self.name), "name", "a name without '/', '\\' or '..'", self.name)
        require(
            "://" not in self.output_dir,
            "output_dir",
            "a local or shared path (a pipeline at a storage URI is not supported yet)",
            self.output_dir,
        )
        for name, stage in self.stages.items():
            require(is_plain_name(name), "stages", "names without '/', '\\' or '..'", name)
            one_of(f"stages.{name}.job", stage.job, STAGE_KINDS)
