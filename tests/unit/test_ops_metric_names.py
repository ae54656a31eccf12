"""Every metric follows Prometheus conventions and is declared once, in pipeline/metrics.py.

Names: ``unmask_`` prefix, counters declared with ``_total``, histograms and gauges named with a
base unit; labels never carry unbounded identifiers. prometheus_client strips ``_total`` from a
counter's name, so the declarations are read from the source rather than from the registry.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import pipeline.metrics as metrics

REPO = Path(__file__).resolve().parents[2]
METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
UNITS = ("_seconds", "_bytes", "_ratio", "_messages", "_items", "_bits", "_up")
UNBOUNDED_LABELS = re.compile(r"(^|_)(id|ids|account|event|user|username|email|ip|url|hash)$")
STANDARD_COLLECTORS = ("process_", "python_")


def declarations(path: Path) -> list[tuple[str, str, int]]:
    """``(class, metric name, line)`` of every metric constructor call in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in METRIC_CLASSES and node.args and isinstance(node.args[0], ast.Constant):
            out.append((name, str(node.args[0].value), node.lineno))
    return out


def test_metric_names_follow_prometheus_conventions() -> None:
    declared = declarations(REPO / "pipeline" / "metrics.py")
    assert len(declared) >= 15
    for kind, name, line in declared:
        where = f"pipeline/metrics.py:{line} {name}"
        assert re.fullmatch(r"unmask_[a-z0-9_]+", name), f"{where}: prefix or characters"
        if kind == "Counter":
            assert name.endswith("_total"), f"{where}: counters end in _total"
        else:
            assert not name.endswith("_total"), f"{where}: only counters end in _total"
        if kind == "Histogram":
            assert name.endswith(UNITS), f"{where}: histograms name their unit {UNITS}"
        if kind == "Gauge":
            assert name.endswith(UNITS), f"{where}: gauges name their unit {UNITS}"
        assert not re.search(r"_(milli|micro|nano)seconds|_(kilo|mega)?bytes_", name), \
            f"{where}: use base units"


def test_labels_are_bounded() -> None:
    wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert wrappers
    for metric in wrappers:
        for label in metric._labelnames:
            assert not UNBOUNDED_LABELS.search(label), \
                f"{metric._name} label {label!r} would carry one value per entity"


def test_registry_holds_only_unmask_metrics_besides_the_standard_collectors() -> None:
    declared = {name.removesuffix("_total") for _k, name, _l in
                declarations(REPO / "pipeline" / "metrics.py")}
    for family in REGISTRY.collect():
        if family.name.startswith(STANDARD_COLLECTORS):
            continue
        assert family.name.startswith("unmask_"), family.name
        assert family.name in declared, f"{family.name} is registered but not in metrics.py"
        if family.type == "histogram":
            assert family.name.endswith(UNITS), family.name


def test_metrics_are_declared_only_in_the_metrics_module() -> None:
    elsewhere = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        if path.name == "metrics.py" and path.parent.name == "pipeline":
            continue
        text = path.read_text()
        if "prometheus_client" not in text:
            continue
        elsewhere += [f"{path.relative_to(REPO)}:{line} {name}"
                      for _k, name, line in declarations(path)]
    assert not elsewhere, f"declare these in pipeline/metrics.py: {elsewhere}"


def test_the_convention_checks_catch_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('from prometheus_client import Counter\nX = Counter("requests", "d")\n')
    assert declarations(bad) == [("Counter", "requests", 2)]
    assert UNBOUNDED_LABELS.search("account_id") and UNBOUNDED_LABELS.search("event_id")
    assert not UNBOUNDED_LABELS.search("topic") and not UNBOUNDED_LABELS.search("code")


def test_every_metric_is_documented_in_operations_md() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    for kind, name, _line in declarations(REPO / "pipeline" / "metrics.py"):
        shown = f"{name}_info" if kind == "Info" else name
        assert f"| `{shown}` |" in docs, f"{shown} is missing from the table in docs/operations.md"
