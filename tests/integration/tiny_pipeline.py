"""The tiny `make pipeline` the integration tests share: prepare -> pretrain -> finetune ->
eval -> serve config on the tiny data (tiny_runs.TINY_DATA), DPO left out (one more Ray Train
run for what finetune already shows). conftest.py `tiny_pipeline_root` runs it once per
session, tracked in MLflow; test_pipeline.py reruns it, test_tracking_ui.py shows its runs."""

from __future__ import annotations

from tiny_runs import TINY_DATA

from rundir.stage_manifest import manifest_path, read_manifest

STAGES = ["prepare", "pretrain", "finetune", "eval", "serve"]
STEPS = [
    "scaling.num_workers=1",  # one Ray Train worker: the pipeline, not sharding, is tested
    "trainer.max_steps=4",
    "trainer.micro_batch_size=4",
    "trainer.log_every_steps=2",
    "trainer.eval_every_steps=4",
    "trainer.eval_batches=1",
    "trainer.checkpoint_every_steps=4",
    "num_samples=0",
]
EVAL = [
    *TINY_DATA[:1],  # its held-out text: the prepared corpus's
    "eval.lm_eval.tasks=[]",
    "eval.max_examples=8",
    "eval.max_new_tokens=4",
    "eval.text_batches=1",
    "eval.seq_len=32",
    "eval.num_samples=1",
]
FINETUNE = [
    *STEPS,
    "trainer.seq_len=64",
    "epochs=null",
    "sft.max_examples=64",
    "evaluate_at_end=false",
]


def listed(name: str, overrides: list[str]) -> str:
    return f"stages.{name}.overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]"


def tiny_pipeline(root, tiny_cache, *extra: str) -> list[str]:
    return [
        f"output_dir={root}",
        f"cache_dir={tiny_cache}",
        "~stages.dpo",
        "stages.eval.inputs.export=finetune.export",
        "stages.serve.inputs.export=finetune.export",
        listed("prepare", TINY_DATA),
        listed("pretrain", STEPS),
        listed("finetune", FINETUNE),
        listed("eval", EVAL),
        *extra,
    ]


def manifests(root) -> dict[str, dict]:
    return {s: read_manifest(manifest_path(root, "default", s)) for s in STAGES}
