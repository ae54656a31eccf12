"""The shipped Prometheus config, alert rules and Grafana dashboard are valid and consistent.

promtool (Debian package ``prometheus``, installed by ``ops/install.sh``) checks the rule and
config syntax and runs the alert unit tests in ``ops/prometheus/alerts_test.yml``; every
dashboard query must parse as PromQL and name only metrics that unmask (or Prometheus) exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import pipeline.metrics  # noqa: F401 - registers every metric of unmask

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "ops" / "prometheus"
GRAFANA = REPO / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "unmask.json"
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                "and", "or", "unless", "le", "inf", "nan"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run ops/install.sh (Debian package 'prometheus')")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=60)


def exported_sample_names() -> set[str]:
    """Every sample name unmask's registry can expose (counters, histograms, infos expanded)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                "_created"), "summary": ("_count", "_sum", "_created"), "info": ("_info",),
                "gauge": ("",)}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    nested = [p for row in panels for p in row.get("panels", [])]
    return [p for p in panels + nested if p.get("type") != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard_panels()
            for target in panel["targets"]]


def metric_names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels or numbers)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end():].lstrip()[:1]
        if before.isdigit() or before == "." or after == "(":
            continue
        names.add(match.group())
    return names - PROMQL_WORDS


def test_alert_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", PROM / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_passes_promtool_check_config() -> None:
    result = promtool("check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_behave_as_their_unit_tests_say() -> None:
    result = promtool("test", "rules", PROM / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "Broken", "expr": "sum by (code (rate(unmask_dlq_records_total[5m]))"}]}]}))
    assert promtool("check", "rules", broken).returncode != 0


def test_scrape_config_targets_the_compose_services() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["unmask-worker"]["dns_sd_configs"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert worker["names"] == ["worker", "avatar-worker"]
    for name in worker["names"]:
        assert name in compose, f"{name} is scraped but is not a compose service"
        assert str(worker["port"]) in [str(p) for p in compose[name].get("expose", [])], name
    assert jobs["unmask-review"]["static_configs"][0]["targets"] == ["review:8088"]
    assert config["rule_files"] == ["alerts.yml"]


def test_every_alert_names_only_exported_metrics_and_has_docs() -> None:
    known = exported_sample_names() | PROMETHEUS_BUILTIN
    rules = [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    operations = (REPO / "docs" / "operations.md").read_text()
    for rule in rules:
        unknown = metric_names_in(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} uses metrics nobody exports: {unknown}"
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["alert"] in operations, f"{rule['alert']} has no runbook in docs/operations.md"


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    rules = []
    for i, (_title, expr) in enumerate(dashboard_exprs()):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_names_exported_metrics() -> None:
    known = exported_sample_names() | PROMETHEUS_BUILTIN
    used: set[str] = set()
    for title, expr in dashboard_exprs():
        names = metric_names_in(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        assert names <= known, f"panel {title!r} uses unknown metrics {names - known}"
        used |= names
    needed = {"unmask_events_consumed_total", "unmask_consumer_lag_messages",
              "unmask_stage_duration_seconds_bucket", "unmask_event_to_decision_seconds_bucket",
              "unmask_dlq_records_total", "unmask_decisions_made_total",
              "unmask_avatar_score_ratio_bucket", "unmask_cluster_score_ratio_bucket",
              "unmask_dependency_up", "unmask_model_info", "unmask_policy_info"}
    assert needed <= used, f"dashboard lacks {needed - used}"


def test_metric_name_extraction_finds_names_and_skips_promql_words() -> None:
    expr = ('histogram_quantile(0.99, sum by (stage, le) '
            '(rate(unmask_stage_duration_seconds_bucket{stage="avatar"}[5m]))) > 5 '
            'and on () count(up{job="w"} == 1) > 0')
    assert metric_names_in(expr) == {"unmask_stage_duration_seconds_bucket", "up"}


def test_dashboard_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/unmask.yml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["grafana"]
    mounted = {v.split(":")[1] for v in compose["volumes"] if "dashboards" in v.split(":")[0]}
    assert provider["providers"][0]["options"]["path"] in mounted
    cells: set[tuple[int, int]] = set()
    ids = set()
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["id"] not in ids
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
