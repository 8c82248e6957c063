"""The multi-LoRA benchmark's code on the tiny export (bench/lora_bench.py)."""

from __future__ import annotations


def test_the_lora_bench_measures_mixed_and_base_alone(export_dir, tmp_path):
    """bench/lora_bench.py's throughput path on the tiny export (the memory half runs
    subprocesses; `make bench` runs it whole)."""
    from bench import lora_bench

    adapters = lora_bench.make_adapters(export_dir, tmp_path, count=2)
    from safetensors.torch import load_file

    weights = load_file(f"{adapters['lora1']}/adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for k, t in weights.items() if "lora_B" in k)  # random B
    mixed = lora_bench.throughput(export_dir, adapters, concurrency=4, requests=6, max_tokens=4)
    base = lora_bench.throughput(export_dir, {}, concurrency=4, requests=6, max_tokens=4)
    assert mixed > 0 and base > 0
    result = {"concurrency": 4, "adapters": 2, "mixed_tokens_per_s": mixed}
    result |= {"base_alone_tokens_per_s": base, "one_replica_rss_bytes": 1.0}
    result |= {"merged_deployments_rss_bytes": 2.0, "one_replica_param_bytes": 1.0}
    result |= {"merged_deployments_param_bytes": 2.0}
    rows = lora_bench.rows(result)
    assert rows[0][1:3] == (mixed, base) and rows[0][3] == "goal >= 0.7"
