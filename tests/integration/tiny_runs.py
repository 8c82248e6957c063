"""The tiny pretraining setup the integration tests share: `model=gpt2-micro` (a 2-layer,
width-64 GPT-2 with a 512-token BPE on 64-token sequences; seconds per run on two CPU
workers). Each test adds its own data size, steps and intervals."""

TINY_MODEL = ["model=gpt2-micro"]
# The data every tiny run trains on, prepared once per session (conftest.py `tiny_cache`):
# a run given `cache_dir=<tiny_cache>` and these overrides reads the cache.
TINY_DATA = ["data.max_documents=800", *TINY_MODEL]

# The reference run: one tiny pretraining (ZeRO-2, 2 workers, every step logged, a
# checkpoint every 10 steps) that the golden-loss, pretraining and resume tests all compare
# against; conftest.py `reference_run` trains it once per session. Its per-step losses are
# the golden curve (tests/assets/golden_losses.json; regenerate it with
# `.venv/bin/python tests/helpers/golden_losses.py` after a deliberate change).
REFERENCE_RUN = [
    *TINY_DATA,
    "deepspeed=zero2",
    "trainer.micro_batch_size=4",
    "trainer.grad_accum_steps=2",
    "trainer.max_steps=40",
    "trainer.log_every_steps=1",
    "trainer.eval_every_steps=20",
    "trainer.eval_batches=2",
    "trainer.checkpoint_every_steps=10",
    "trainer.keep_checkpoints=10",
    "optim.lr=3e-3",
    "optim.warmup_steps=5",
    "model.dropout=0.1",  # exercises the RNG restore: dropout masks must replay exactly
    "seed=1234",
    "num_samples=1",
    "experiment=ref",
]


def prepare_tiny_data(cache_dir: str):
    """TINY_DATA prepared in ``cache_dir`` as `make prepare` does (a cache hit once it is
    there): its PreparedData. Other tests add their own data to the session's cache, so the
    tiny data is found by its key, never by listing the folder."""
    from cluster.runs.resolve import absolute_paths
    from cluster.schema import load_config
    from dataprep.prepare import prepare_data

    cfg = absolute_paths(load_config("train", [*TINY_DATA, f"cache_dir={cache_dir}"]))
    return prepare_data(
        cfg.data, cfg.tokenizer, cfg.trainer.seq_len, cfg.cache_dir, cfg.model.name_or_path
    )
