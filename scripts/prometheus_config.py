#!/usr/bin/env python3
"""Prints deploy/prometheus/prometheus.yml as a Prometheus outside compose needs it (JSON, which
is YAML): its rule files where compose mounts them from (/etc/prometheus/... is
deploy/prometheus/...), and the worker job's service discovery replaced by fixed targets.
Everything else (job name, metrics path, intervals, rules) is the deployed file's.

    prometheus_config.py --targets 127.0.0.1:6066[,host:port...] [--interval 15s]

Used by scripts/stack (component prometheus) and, through it, by the integration test.
Standard library plus PyYAML (the project's virtualenv has it, as Debian's python3-yaml does).
"""
import argparse
import json
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
MOUNTED_AT = "/etc/prometheus/"          # docker-compose.yml: ./deploy/prometheus:/etc/prometheus:ro
WORKER_JOB = "txpipe-worker"


def render(targets: list[str], interval: str = "") -> dict:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / f[len(MOUNTED_AT):]) if f.startswith(MOUNTED_AT) else f
                            for f in config.get("rule_files", [])]
    if interval:
        config.setdefault("global", {}).update(scrape_interval=interval, evaluation_interval=interval)
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == WORKER_JOB]
    if len(jobs) != 1:
        raise SystemExit(f"{DEPLOY / 'prometheus.yml'}: expected one scrape job {WORKER_JOB!r}")
    for key in [k for k in jobs[0] if k.endswith("_sd_configs")]:
        del jobs[0][key]
    jobs[0]["static_configs"] = [{"targets": targets}]
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", required=True, help="workers to scrape, host:port, comma-separated")
    parser.add_argument("--interval", default="", help="scrape and rule evaluation interval (default: the file's)")
    args = parser.parse_args()
    json.dump(render([t for t in args.targets.split(",") if t], args.interval), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
