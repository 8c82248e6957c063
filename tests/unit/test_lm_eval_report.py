"""lm-eval's results as zeroray reports them: flattened to {task: {metric: value}} and set
side by side in the printed table; and the endpoint setting's checks."""

from __future__ import annotations

import httpx
import pytest

from cluster.schema import load_config
from evaluation.lm_eval_runner import TASKS_DIR, _task_manager, flatten, task_manager
from evaluation.report import format_reports
from schemas.evaluation import SHIPPED_LM_EVAL_TASKS, LmEvalConfig
from schemas.fields import ConfigError

RESULTS = {  # the shape lm_eval.simple_evaluate returns (trimmed)
    "results": {
        "zeroray_docstring_mc": {
            "alias": "zeroray_docstring_mc",
            "acc,none": 0.25,
            "acc_stderr,none": "N/A",
            "acc_norm,none": 0.5,
        },
        "zeroray_bias_pairs": {"pct_stereotype,none": 0.625, "likelihood_diff,none": 3.5},
    },
    "n-samples": {
        "zeroray_docstring_mc": {"original": 294, "effective": 8},
        "zeroray_bias_pairs": {"original": 24, "effective": 24},
    },
}


def test_flatten_keeps_the_figures_and_the_document_counts():
    assert flatten(RESULTS) == {
        "zeroray_docstring_mc": {"acc": 0.25, "acc_norm": 0.5, "documents": 8},
        "zeroray_bias_pairs": {"pct_stereotype": 0.625, "likelihood_diff": 3.5, "documents": 24},
    }


def test_the_table_sets_lm_eval_metrics_side_by_side():
    a = {"lm_eval": flatten(RESULTS), "samples": []}
    b = {
        "lm_eval": {**flatten(RESULTS), "zeroray_bias_pairs": {"pct_stereotype": 0.5}},
        "samples": [],
    }
    table = format_reports([a, b], ["base", "tuned"]).splitlines()
    row = next(line for line in table if "docstring_mc acc " in line)
    assert row.split()[-2:] == ["0.25", "0.25"]
    row = next(line for line in table if "pct_stereotype" in line)
    assert row.split()[-2:] == ["0.625", "0.5"]
    # A metric one report lacks gets no row; documents is bookkeeping, not a metric.
    assert not [line for line in table if "likelihood_diff" in line or "documents" in line]


def test_the_shipped_tasks_have_their_yaml():
    for task in SHIPPED_LM_EVAL_TASKS + ("zeroray_docstring_qa",):
        assert (TASKS_DIR / f"{task}.yaml").read_text().count(f"task: {task}") == 1


@pytest.mark.parametrize("endpoint", ["localhost:8000/v1", "http://host:8000", "ftp://h/v1"])
def test_an_endpoint_must_be_an_http_api_base(endpoint):
    with pytest.raises(ConfigError, match="endpoint"):
        load_config("eval", [f"endpoint={endpoint}"])
    assert load_config("eval", ["endpoint=http://host:8000/v1"]).endpoint.endswith("/v1")


def test_lm_evals_own_tasks_are_indexed_only_when_asked_for():
    """zeroray's tasks alone skip indexing lm-eval's ~15,000 task files (seconds per
    evaluated export); a built-in task name brings them in."""
    ours = task_manager(LmEvalConfig())
    assert set(SHIPPED_LM_EVAL_TASKS) <= set(ours.all_tasks) and "hellaswag" not in ours.all_tasks
    assert task_manager(LmEvalConfig()) is ours  # built once per process
    assert "hellaswag" in _task_manager((), ("zeroray_bias_pairs", "hellaswag")).all_tasks


def test_eval_on_an_endpoint_picks_the_adapter_it_names(monkeypatch):
    """`make eval ARGS="endpoint=... endpoint_model=<adapter>"`: lm-eval is pointed at that id;
    an id the endpoint does not list is one line naming the setting."""
    import evaluation.lm_eval_runner as runner
    from cluster import eval as eval_entry
    from cluster.schema import load_config
    from schemas.fields import ConfigError

    listed = {"data": [{"id": "base"}, {"id": "alpha", "parent": "base"}]}
    answers = {"/v1/models": listed, "/tokenizer_info": {"model_max_length": 64}}
    monkeypatch.setattr(
        httpx,
        "get",
        lambda url, **_: httpx.Response(200, json=answers[url.split(":8000")[1]]),
    )
    asked = []
    monkeypatch.setattr(runner, "on_endpoint", lambda base, model, *_: asked.append(model) or {})
    overrides = ["endpoint=http://127.0.0.1:8000/v1"]
    eval_entry.evaluate_endpoint(load_config("eval", [*overrides, "endpoint_model=alpha"]))
    eval_entry.evaluate_endpoint(load_config("eval", overrides))
    assert asked == ["alpha", "base"]
    with pytest.raises(ConfigError, match="endpoint_model='gamma'.*allowed: base, alpha"):
        eval_entry.evaluate_endpoint(load_config("eval", [*overrides, "endpoint_model=gamma"]))
