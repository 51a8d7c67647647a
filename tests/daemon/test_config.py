"""config.toml is the documented default: it parses, equals the built-in defaults, every key
is explained, and bad values name their key."""

from __future__ import annotations

import tomllib

import pytest

from daemon.config import Config, ConfigError, load_config, parse_config
from tests.daemon.service_helpers import REPO


def test_shipped_config_is_exactly_the_defaults():
    assert load_config(REPO / "config.toml") == Config()


def test_every_key_in_the_shipped_config_is_commented():
    lines = (REPO / "config.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "[")):
            continue
        key = stripped.split("=", 1)[0].strip()
        above = lines[i - 1].strip() if i else ""
        explained = "#" in line.split("=", 1)[1] or above.startswith("#") or \
            (not above.startswith("[") and "=" in above)  # a group of keys under one comment
        assert explained, f"config.toml: key {key!r} has no comment"


def test_every_config_field_appears_in_the_shipped_file():
    shipped = tomllib.loads((REPO / "config.toml").read_text())
    for section, values in Config().__class__.__dataclass_fields__.items():
        fields = values.default_factory().__dataclass_fields__
        assert set(shipped[section]) == set(fields), f"[{section}] keys differ from the defaults"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"input": {"settle_s": -1}}, "input.settle_s"),
        ({"input": {"patterns": "*.tif"}}, "input.patterns"),
        ({"zmq": {"endpoint": "udp://x"}}, "zmq.endpoint"),
        ({"metrics": {"port": 70000}}, "metrics.port"),
        ({"postprocess": {"adaptive_block_px": 50}}, "postprocess.adaptive_block_px"),
        ({"alerts": {"webhook_url": "ftp://x"}}, "alerts.webhook_url"),
        ({"optics": {"fields": 1}}, "optics.fields"),
        ({"optics": {"wells": 9}}, "optics.wells"),
        ({"optics": {"overlap": 0}}, "optics.overlap"),
        ({"optics": {"overlap": 1.5}}, "optics.overlap"),
        ({"optics": {"missed_fields": -1}}, "optics.missed_fields"),
        ({"optics": {"enabled": "yes"}}, "optics.enabled"),
        ({"service": {"log_level": "LOUD"}}, "service.log_level"),
        ({"model": {"threads": True}}, "model.threads"),
        ({"model": {"detect_threshold": 1.0}}, "model.detect_threshold"),
        ({"model": {"detect_threshold": -0.1}}, "model.detect_threshold"),
        ({"pipeline": {"engine_workers": -1}}, "pipeline.engine_workers"),
        ({"thumbnails": {"downsample": 0}}, "thumbnails.downsample"),
        ({"thumbnails": {"enabled": "yes"}}, "thumbnails.enabled"),
        ({"web": {"port": -1}}, "web.port"),
        ({"web": {"plate_format": "48"}}, "web.plate_format"),
        ({"web": {"host": "0.0.0.0"}}, "web.host"),
        ({"web": {"tokens": ["no-colon-here-at-all"]}}, "web.tokens"),
    ],
)
def test_invalid_values_name_their_key(raw, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(raw)
