"""The jobs, in one place: what `make submit JOB=...` accepts (cluster/ops/submit.py), which
modules a submitted job may start (cluster/ops/job_entry.py), the schema each Hydra primary
config is checked against (cluster/schema.py) and the list `make help` prints
(``python -m cluster.jobs``).

Standard library only: job_entry imports this on whatever interpreter the cluster's shell
finds, and `make help` runs it before any environment exists. So schemas are named by import
path, and only cluster/schema.py imports them (``load_schema``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str  # JOB= of `make submit`
    module: str  # what the job runs: python -m MODULE overrides...
    config: str  # the Hydra primary config it composes: conf/<config>.yaml
    schema: str  # "module:Class" that config is checked against
    description: str  # one line, for `make help`
    finds_base_model: bool = False  # model.name_or_path=null: the job finds the newest export


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job(
            "train",
            "cluster.train",
            "train",
            "schemas.jobs:TrainJobConfig",
            "pretrain: prepare the data, train with DeepSpeed on Ray Train, export",
        ),
        Job(
            "prepare",
            "cluster.prepare",
            "train",
            "schemas.jobs:TrainJobConfig",
            "only prepare (clean, tokenizer, tokenize, pack) the data of ARGS",
        ),
        Job(
            "finetune",
            "cluster.finetune",
            "finetune",
            "schemas.jobs:FinetuneJobConfig",
            "fine-tune the newest pretraining export on instruction data",
            finds_base_model=True,
        ),
        Job(
            "dpo",
            "cluster.dpo",
            "dpo",
            "schemas.jobs:DPOJobConfig",
            "preference-tune (DPO) the newest fine-tuning export",
            finds_base_model=True,
        ),
        Job(
            "eval",
            "cluster.eval",
            "eval",
            "schemas.jobs:EvalJobConfig",
            'evaluate the newest export (or ARGS="export=PATH") -> eval.json',
        ),
        Job(
            "pipeline",
            "cluster.pipeline",
            "pipeline",
            "schemas.jobs:PipelineConfig",
            "prepare -> pretrain -> finetune -> dpo -> eval -> serve config; unchanged stages skip",
        ),
    )
}

# Hydra primary configs that no submitted job composes: `make serve` starts the Serve app on
# the cluster itself.
OTHER_CONFIGS = {"serve": "schemas.jobs:ServeJobConfig"}


def entry_modules() -> tuple[str, ...]:
    return tuple(job.module for job in JOBS.values())


def config_schemas() -> dict[str, str]:
    """Hydra primary config -> the import path of its schema."""
    schemas: dict[str, str] = {}
    for job in JOBS.values():
        if schemas.setdefault(job.config, job.schema) != job.schema:
            raise ValueError(
                f"conf/{job.config}.yaml has two schemas: {schemas[job.config]}, {job}"
            )
    return {**schemas, **OTHER_CONFIGS}


def load_schema(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def main() -> None:
    print('jobs (make submit JOB=... ARGS="..."; cluster/jobs.py):')
    for job in JOBS.values():
        print(f"  {f'make submit JOB={job.name}':<29} {job.description}")


if __name__ == "__main__":
    main()
