"""The Prometheus alerting rules: promtool checks and unit-tests them; names match the metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.ops.metrics import Metrics

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "artifactd-rules.yml"
RULE_TESTS = RULES_DIR / "artifactd-rules.test.yml"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not found (apt-get install prometheus; `make test` does)")
    return tool


def exposed_names() -> set[str]:
    """Sample names the service exports (labelled series exist before any child is made)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_rules_use_only_metrics_the_service_exports():
    used = set(re.findall(r"\bartifactd_[a-z_]+", RULES.read_text()))
    assert used, "no artifactd metric in the rules"
    assert used <= exposed_names(), used - exposed_names()


def test_every_asked_for_alert_is_there():
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert {
        "ArtifactdContamination", "ArtifactdPipelineStalled", "ArtifactdBacklogGrowing",
        "ArtifactdFrameFailures", "ArtifactdOutputNotWritable", "ArtifactdOpticsDirty",
    } <= alerts
    # Each alert has a promtool test.
    assert alerts <= set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))


def test_promtool_check_rules():
    run = subprocess.run([promtool(), "check", "rules", str(RULES)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_promtool_test_rules():
    run = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULES_DIR,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
