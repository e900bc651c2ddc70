"""The local Ingress's rules and nginx config (pure: no process is started here)."""

from __future__ import annotations

from pathlib import Path

from fincart_devstack.ingress_proxy import IngressRules, render_config


def test_the_numbers_follow_the_services_values() -> None:
    assert IngressRules().annotations() == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "2097152",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "45",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "45",
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    }
    rules = IngressRules.from_env({"FINCART_MAX_BODY_BYTES": "4096", "FINCART_HEARTBEAT_INTERVAL_S": "1.5"})
    assert (rules.body_limit_bytes, rules.timeout_s) == (4096 + 1_048_576, 5)  # 4.5 s rounded up
    assert rules.service_env() == {"FINCART_MAX_BODY_BYTES": "4096", "FINCART_HEARTBEAT_INTERVAL_S": "1.5"}


def test_the_config_routes_only_the_public_paths() -> None:
    config = render_config(IngressRules(), prefix=Path("/run/x"), port=9000, upstreams={"ingest": 1, "sync": 2})
    locations = sorted(line.strip() for line in config.splitlines() if line.strip().startswith("location"))
    assert locations == [
        "location / { return 404; }",
        "location /orders/ { proxy_pass http://sync; }",
        "location /webhooks/ { proxy_pass http://ingest; }",
        "location = / { proxy_pass http://sync; }",
        "location = /orders { proxy_pass http://sync; }",
        "location = /sync { proxy_pass http://sync; }",
        "location = /webhooks { proxy_pass http://ingest; }",
    ]
    assert "client_max_body_size 2097152;" in config and "proxy_read_timeout 45s;" in config
    assert "listen 127.0.0.1:9000 default_server;" in config and "client_body_temp_path /run/x/tmp/body;" in config


def test_a_host_rule_and_a_missing_backend() -> None:
    config = render_config(IngressRules(host="fincart.local"), prefix=Path("/p"), port=9000, upstreams={"ingest": 1})
    assert "server { listen 127.0.0.1:9000 default_server; return 404; }" in config  # other hosts
    assert "server_name fincart.local;" in config
    assert "location = /sync { return 503; }" in config and "upstream sync" not in config
