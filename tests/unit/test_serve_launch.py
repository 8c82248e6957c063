"""The serving launcher's checkpoint resolution: paths, the newest export, URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.schema import load_config
from cluster.serve import resolve_checkpoint, serve_config_file
from schemas.fields import ConfigError


def test_uri_checkpoint_is_downloaded_once(tiny_export, tmp_path):
    cfg = load_config("serve", [f"checkpoint={tiny_export.as_uri()}", f"cache_dir={tmp_path}"])
    first = Path(resolve_checkpoint(cfg))
    assert first.is_relative_to(tmp_path) and (first / "config.json").is_file()
    (first / "marker").write_text("kept")  # a second call must reuse, not re-download
    assert Path(resolve_checkpoint(cfg)) == first and (first / "marker").exists()


def test_newest_export_is_found_and_bad_paths_refused(tiny_export, tmp_path):
    run = tmp_path / "runs" / "pretrain" / "r1"
    run.mkdir(parents=True)
    (run / "export").symlink_to(tiny_export, target_is_directory=True)
    cfg = load_config("serve", [f"output_dir={tmp_path / 'runs'}"])
    assert resolve_checkpoint(cfg) == str(run / "export")
    with pytest.raises(ConfigError, match="not a Hugging Face export"):
        resolve_checkpoint(load_config("serve", [f"checkpoint={tmp_path}"]))
    with pytest.raises(ConfigError, match="no export under output_dir"):
        resolve_checkpoint(load_config("serve", [f"output_dir={tmp_path / 'none'}"]))


def test_serve_config_file_builds_the_same_app_args(tiny_export):
    cfg = load_config("serve", [f"checkpoint={tiny_export}", "serve.max_batch_size=4"])
    cfg.serve.model_dir = resolve_checkpoint(cfg)
    app = serve_config_file(cfg)["applications"][0]
    assert app["import_path"] == "serve.deployment:build_app"
    assert app["args"]["max_batch_size"] == 4 and app["args"]["model_dir"] == str(tiny_export)


@pytest.mark.parametrize(
    "override",
    [
        "serve.batch_wait_timeout_s=-1",
        "serve.max_batch_size=0",
        "serve.stream_interval_s=0",  # the decode loop would never answer
        "serve.retry_after_s=0",
    ],
)
def test_bad_batching_settings_name_the_field(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config("serve", [override])


def test_the_replica_not_serves_router_answers_overload():
    from schemas.serving import ServeConfig
    from serve.deployment import deployment_options

    # The replica admits max_ongoing + max_queued prompts, then answers 429 with Retry-After
    # (test_serve_http.py); Serve must hand it at least one request more, or Serve's router
    # would hold that request in its own queue and no client would ever see the 429.
    args = ServeConfig(max_ongoing_requests=1, max_queued_requests=0)
    assert deployment_options(args)["max_ongoing_requests"] == 2


def test_bearer_key_scheme_in_any_case_and_nothing_else():
    from serve.api.request_checks import bearer_matches

    assert bearer_matches("Bearer sekrit", "sekrit")
    assert bearer_matches("bearer sekrit", "sekrit") and bearer_matches("BEARER sekrit", "sekrit")
    for header in (None, "", "sekrit", "Basic sekrit", "Bearer sekri", "Bearer sekrit2", "Bearer"):
        assert not bearer_matches(header, "sekrit"), header


def test_no_key_is_written_into_a_serve_config_file(tiny_export):
    from cluster.serve import serve_config_file

    cfg = load_config("serve", [f"checkpoint={tiny_export}", "serve.api_key=sekrit"])
    with pytest.raises(ConfigError, match="serve.api_key would be written in plain text"):
        serve_config_file(cfg)


def test_an_open_host_without_a_key_is_refused_before_ray_starts(tiny_export, monkeypatch):
    from cluster.serve import refuse_an_open_endpoint

    monkeypatch.delenv("ZERORAY_API_KEY", raising=False)
    base = [f"checkpoint={tiny_export}", "host=0.0.0.0"]
    with pytest.raises(ConfigError, match="host='0.0.0.0' serves beyond this machine"):
        refuse_an_open_endpoint(load_config("serve", base))
    refuse_an_open_endpoint(load_config("serve", [*base, "allow_unauthenticated=true"]))
    refuse_an_open_endpoint(load_config("serve", [*base, "serve.api_key=sekrit"]))
    monkeypatch.setenv("ZERORAY_API_KEY", "from-the-environment")
    refuse_an_open_endpoint(load_config("serve", base))
    refuse_an_open_endpoint(load_config("serve", [f"checkpoint={tiny_export}"]))  # loopback


def test_the_ingress_is_checked_and_a_serve_config_says_how_to_start_the_nodes(tiny_export):
    import yaml

    from cluster.serve import ingress_env, serve_config_file, serve_config_header

    with pytest.raises(ConfigError, match=r"ingress='nginx' is not allowed: one of haproxy, proxy"):
        load_config("serve", ["ingress=nginx"])
    assert ingress_env("haproxy", True) == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
    }
    assert ingress_env("proxy", False) == {}
    cfg = load_config("serve", [f"checkpoint={tiny_export}"])
    header = serve_config_header(cfg)
    assert "#   RAY_SERVE_ENABLE_HA_PROXY=1\n" in header and "host=0.0.0.0" in header
    # Comments only: the file is still the same Serve config.
    text = header + yaml.safe_dump(serve_config_file(cfg))
    assert yaml.safe_load(text) == serve_config_file(cfg)
    open_host = load_config("serve", [f"checkpoint={tiny_export}", "host=0.0.0.0"])
    assert "host=0.0.0.0" not in serve_config_header(open_host)
