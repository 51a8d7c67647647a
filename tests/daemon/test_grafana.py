"""The Grafana dashboard: every metric a panel (or a variable) queries is one the running service
exports, names taken from a real /metrics scrape over HTTP; promtool parses every query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.service_helpers import (
    REPO,
    config_file,
    metrics_port,
    scrape,
    start_service,
    stop,
    stored_sources,
    wait_for,
    write_frames,
)

DASHBOARD = REPO / "deploy" / "grafana" / "artifactd.json"

# PromQL words that are not metric names: keywords and the operators spelled as words.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}
# Sample names per family type, as the exposition format writes them.
SUFFIXES = {"counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",),
            "unknown": ("",)}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return [p for p in found if p["type"] != "row"]


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    found = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels(dashboard)
             for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            found.append((f"variable {variable['name']}", label_values_selector(query)))
    return found


def label_values_selector(query: str) -> str:
    """Grafana's label_values(SELECTOR, LABEL) -> SELECTOR (the label is no metric)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    assert match, f"unexpected variable query {query!r}"
    return match.group(1)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: not functions, not label names inside
    matchers or by/without/on/ignoring/group_* lists, not keywords, not durations or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, before = match.group(0), text[: match.start()]
        if before and (before[-1].isdigit() or before[-1] in ".$"):
            continue  # 1e3, 0.5, a Grafana $variable
        if word.lower() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # a keyword, or a function (or aggregation) call
        names.add(word)
    return names


def exported(name: str, families: dict[str, str]) -> bool:
    """Whether `name` is a sample name of a family the service exports (a histogram's
    _bucket/_sum/_count, a counter's _total...)."""
    for family, kind in families.items():
        if name.startswith(family) and name[len(family):] in SUFFIXES.get(kind, ("",)):
            return True
    return False


# ---------------------------------------------------------------------- the parser itself


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (le, plate) (rate(a_bucket{rule!="optics", plate=~"$plate"}[$__rate_interval]))',
     {"a_bucket"}),
    ("histogram_quantile(0.99, sum without (instance) (rate(lat_seconds_bucket[5m])))",
     {"lat_seconds_bucket"}),
    ("x_total / on(plate) group_left(well) y_info or vector(0)", {"x_total", "y_info"}),
    ('max(c{rule="by (x) or y"}) > bool 1e3 unless d offset 5m', {"c", "d"}),
    ("rate(e_total[5m:30s]) * 60 and ignoring (job) f", {"e_total", "f"}),
])
def test_metric_names_are_parsed_out_of_promql(expr, names):
    assert metric_names(expr) == names


def test_exported_resolves_histogram_and_counter_samples_only():
    families = {"artifactd_frame_latency_seconds": "histogram", "artifactd_frames": "counter",
                "artifactd_queue_depth": "gauge"}
    assert exported("artifactd_frame_latency_seconds_bucket", families)
    assert exported("artifactd_frames_total", families)
    assert exported("artifactd_queue_depth", families)
    # A histogram has no bare series; a counter's is _total.
    assert not exported("artifactd_frame_latency_seconds", families)
    assert not exported("artifactd_frames", families)
    assert not exported("artifactd_queue_depth_total", families)
    assert not exported("artifactd_frames_processed_total", families)


# ---------------------------------------------------------------------- the dashboard


def test_dashboard_has_a_prometheus_datasource_variable_used_by_every_query():
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    uses = [p["datasource"] for p in panels(dashboard)]
    uses += [t["datasource"] for p in panels(dashboard) for t in p["targets"]]
    uses += [v["datasource"] for v in variables.values() if v["type"] == "query"]
    assert uses and all(u == {"type": "prometheus", "uid": "${datasource}"} for u in uses)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(p["targets"] for p in panels(dashboard))


def test_dashboard_shows_what_the_operator_watches():
    exprs = " ".join(expr for _, expr in queries(load()))
    titles = " ".join(p["title"].lower() for p in panels(load()))
    for subject in ("throughput", "latency", "backlog", "failures by reason", "flag rate per plate",
                    "contamination", "optics"):
        assert subject in titles, subject
    for q in ("0.5", "0.9", "0.99"):  # latency percentiles over the service's histogram
        assert (f"histogram_quantile({q}, sum by (le) "
                "(rate(artifactd_frame_latency_seconds_bucket") in exprs
    assert "sum by (reason) (rate(artifactd_frames_failed_total" in exprs
    assert "sum by (plate) (rate(artifactd_plate_fields_total" in exprs
    assert "artifactd_queue_depth" in exprs and "artifactd_contamination" in exprs


@pytest.mark.timeout(180)
def test_every_metric_the_dashboard_queries_is_exported_by_the_running_service(tmp_path):
    folder, store, log = tmp_path / "in", tmp_path / "results.zarr", tmp_path / "service.log"
    write_frames(folder, 3, size=128)
    process = start_service(config_file(tmp_path, input_dir=folder, store=store), log=log)
    try:
        port = metrics_port(log)
        wait_for(lambda: len(stored_sources(store)) == 3, 90, "the frames to be stored")
        text = scrape(port)  # over HTTP, from the service itself
        assert stop(process) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert "artifactd_frame_latency_seconds" in families  # a real artifactd scrape
    missing = {}
    for where, expr in queries(load()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = {n for n in names if not exported(n, families)}
        if unknown:
            missing[where] = sorted(unknown)
    assert not missing, f"queried but not exported: {missing}"


# ---------------------------------------------------------------------- promtool


def grafana_free(expr: str) -> str:
    """The query as Prometheus would get it: Grafana's interval variables as 5m, the others as
    a regex matching anything."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", ".+", expr)


def test_every_query_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found (apt-get install prometheus; `make test` does)")
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(queries(load())):
        rules += [f"      - record: dashboard:query_{i}",
                  f"        expr: {json.dumps(grafana_free(expr))}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(queries(load()))} rules found" in run.stdout
