"""The alert rules under promtool (Debian's `prometheus` package; scripts/bootstrap installs
it): they load, and each has a unit test in deploy/prometheus/tests/ that shows it firing on
its condition and silent otherwise."""
from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.settings import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"
MOUNTED_AT = "/etc/prometheus/"           # where docker-compose.yml mounts deploy/prometheus


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: run scripts/bootstrap (apt-get install prometheus)", pytrace=False)
    return found


def rule_files() -> list[Path]:
    """The rule files prometheus.yml loads, as compose mounts them."""
    patterns = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["rule_files"]
    found = [Path(f) for p in patterns for f in sorted(glob.glob(str(DEPLOY / p.removeprefix(MOUNTED_AT))))]
    assert found and all(p.startswith(MOUNTED_AT) for p in patterns), patterns
    return found


def rule_tests() -> list[Path]:
    return sorted((DEPLOY / "tests").glob("*.test.yml"))


def alerts() -> set[str]:
    return {rule["alert"] for f in rule_files() for group in yaml.safe_load(f.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules() -> None:
    done = run("check", "rules", *map(str, rule_files()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_checks_the_config_as_the_local_stack_renders_it(tmp_path: Path) -> None:
    rendered = subprocess.run([sys.executable, str(ROOT / "scripts" / "prometheus_config.py"),
                               "--targets", "127.0.0.1:6066"], capture_output=True, text=True, check=True).stdout
    assert json.loads(rendered)["rule_files"] == [str(f) for f in rule_files()]
    (tmp_path / "prometheus.yml").write_text(rendered)
    done = run("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = run("test", "rules", *map(str, rule_tests()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_rule_has_a_test_that_fires_and_one_that_does_not() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    deployed = {f.resolve() for f in rule_files()}
    for path in rule_tests():
        spec = yaml.safe_load(path.read_text())
        # The rules under test are the deployed ones, not a copy.
        assert {(path.parent / f).resolve() for f in spec["rule_files"]} <= deployed, path.name
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts() - fires == set(), "alert rules without a test that fires (deploy/prometheus/tests/)"
    assert alerts() - silent == set(), "alert rules without a test where they stay silent"
