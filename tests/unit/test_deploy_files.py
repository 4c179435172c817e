"""docker-compose.yml cannot run here; check what can be checked: shape and settings."""
from __future__ import annotations

import dataclasses
import json

import yaml

from app.settings import ENV_PREFIX, ROOT, Settings


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def workers(c: dict) -> dict:
    """The worker services (one per worker: each has its own group instance id)."""
    return {name: service for name, service in c["services"].items() if name.startswith("worker")}


def test_compose_has_the_stack_topology() -> None:
    services = compose()["services"]
    assert {"kafka", "schema-registry", "postgres", "scylla"} <= set(services)
    assert len(workers(compose())) == 2
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_each_worker_has_its_own_stable_group_instance_id_and_host_name() -> None:
    """Static membership: a restarted worker comes back under the same id (and URL, which
    faust's table routing uses); two workers sharing an id would fence each other."""
    services = workers(compose()).values()
    ids = [s["environment"]["APP_KAFKA_GROUP_INSTANCE_ID"] for s in services]
    assert len(set(ids)) == len(ids) and all(ids)
    assert len({s["hostname"] for s in services}) == len(ids)
    assert all(s["networks"]["default"]["aliases"] == ["worker"] for s in services)


def test_every_setting_compose_passes_exists_and_parses() -> None:
    for service in workers(compose()).values():
        check_settings(service["environment"])


def check_settings(env: dict) -> None:
    known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    passed = {k for k in env if k.startswith(ENV_PREFIX)}
    assert passed and passed <= known, f"unknown settings in compose: {sorted(passed - known)}"
    resolved = {k: str(v).replace("${POSTGRES_PASSWORD:-change-me}", "x") for k, v in env.items()}
    s = Settings.load(resolved)      # prod: would raise if a required server were missing
    assert s.env == "prod" and s.cql_hosts == ("scylla",)


def test_compose_services_the_workers_name_exist() -> None:
    c = compose()
    env = c["services"]["worker-1"]["environment"]
    for key in ("APP_KAFKA_BROKERS", "APP_POSTGRES_DSN", "APP_SCHEMA_REGISTRY_URL"):
        host = env[key].split("://", 1)[1].split("@")[-1].split(":")[0].split("/")[0]
        assert host in c["services"], f"{key} points at {host}, not a compose service"
    assert env["APP_CQL_HOSTS"] in c["services"]


def test_each_worker_has_its_own_volume_on_the_data_directory() -> None:
    for name, worker in workers(compose()).items():
        data_dir = worker["environment"]["APP_DATA_DIR"]
        # An anonymous volume (a bare container path): one per container. A named one
        # ("name:/path") shared by workers would break: RocksDB takes a lock per directory.
        assert data_dir in worker["volumes"], f"{name}: no volume on APP_DATA_DIR: tables die with the container"
        assert Settings.load({"APP_DATA_DIR": data_dir}).data_dir == data_dir


def test_the_image_owns_the_data_directory_compose_uses() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    data_dir = compose()["services"]["worker-1"]["environment"]["APP_DATA_DIR"]
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    assert f"APP_DATA_DIR={data_dir}" in next(line for line in lines if line.startswith("ENV "))
    assert any(line.startswith("RUN ") and f"mkdir -p {data_dir}" in line and f"chown {user}:" in line
               for line in lines)


# --- Prometheus, alert rules and Grafana (issue 6) ----------------------------------------

DEPLOY = ROOT / "deploy"
PROMETHEUS_BUILTINS = {"up"}


def exported_names() -> set[str]:
    """Every sample name a worker exports (the names app/metrics.py defines, plus the
    process collector's), whatever traffic it has seen."""
    from faust.sensors.monitor import Monitor

    from app import metrics
    return metrics.names([metrics.PipelineCollector(str), metrics.FaustMonitorCollector(Monitor)])


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects; raises on a syntax error."""
    import promql_parser

    found: set[str] = set()

    def walk(node: object) -> None:
        if type(node).__name__ == "VectorSelector" and getattr(node, "name", None):
            found.add(node.name)  # type: ignore[attr-defined]
        for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                walk(child)
        for child in getattr(node, "args", None) or ():
            walk(child)

    walk(promql_parser.parse(expr))
    return found


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "txpipe.json").read_text())


def test_compose_runs_prometheus_and_grafana_on_the_deploy_files() -> None:
    services = compose()["services"]
    for name, mounts in (("prometheus", ["./deploy/prometheus:/etc/prometheus:ro"]),
                         ("grafana", ["./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
                                      "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"])):
        assert services[name]["volumes"] == mounts
        for mount in mounts:
            assert (ROOT / mount.split(":")[0]).is_dir(), mount
    for worker in workers(compose()).values():
        assert "/health" in " ".join(worker["healthcheck"]["test"])
        assert worker["environment"]["APP_LOG_FORMAT"] == "json"


def test_prometheus_scrapes_every_worker_replica_on_its_web_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "txpipe-worker"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    worker_env = compose()["services"]["worker-1"]["environment"]
    # "worker": the network alias every worker service has
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == int(worker_env["APP_WEB_PORT"])
    assert worker_env["APP_WEB_HOST"] == "0.0.0.0"        # reachable from the Prometheus container
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_alert_rules_parse_and_use_only_exported_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {"TxpipeConsumerLagGrowing", "TxpipeDeadLetterRateHigh",
                                           "TxpipeWorkerNotReady"}
    known = exported_names() | PROMETHEUS_BUILTINS
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= known, f"{rule['alert']}: unknown metrics {sorted(names - known)}"
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_dashboard_parses_and_queries_only_exported_metrics() -> None:
    board = dashboard()
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "txpipe.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
                                .read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    known = exported_names() | PROMETHEUS_BUILTINS
    used: set[str] = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names <= known, f"panel {panel['title']!r}: unknown metrics {sorted(names - known)}"
            used |= names
    # the list: throughput, lag, dead letters, cache, database latencies, e2e, batches
    assert {"pipeline_events_in_total", "pipeline_events_out_total", "pipeline_consumer_lag",
            "pipeline_dead_letters_total", "pipeline_cache_hits_total", "pipeline_postgres_seconds_bucket",
            "pipeline_cql_seconds_bucket", "pipeline_e2e_latency_seconds_bucket",
            "pipeline_batch_size_bucket", "pipeline_ready"} <= used


def test_the_name_check_catches_a_typo() -> None:
    assert metric_names("sum(rate(pipeline_events_inn_total[5m]))") - exported_names() == {
        "pipeline_events_inn_total"}


# --- Kubernetes (deploy/k8s) ------------------------------------------------------------------

K8S = DEPLOY / "k8s"
SECRET_SETTINGS = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings) if f.metadata["secret"]}
KNOWN_SETTINGS = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}


def k8s(kind: str, path: str = "") -> dict:
    files = [K8S / path] if path else sorted(K8S.glob("*.yaml"))
    (found,) = [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc and doc["kind"] == kind]
    return found


def worker_container() -> dict:
    (container,) = k8s("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}


def test_every_setting_the_k8s_workers_get_exists_and_secrets_come_from_the_secret() -> None:
    config = k8s("ConfigMap")["data"]
    env = worker_container()["env"]
    named = set(config) | {e["name"] for e in env if e["name"].startswith(ENV_PREFIX)}
    assert named <= KNOWN_SETTINGS, f"unknown settings in deploy/k8s: {sorted(named - KNOWN_SETTINGS)}"
    assert not set(config) & SECRET_SETTINGS, "a secret in the ConfigMap"
    secret = k8s("Secret", "secret.example.yaml")
    for e in env:
        if e["name"] in SECRET_SETTINGS:
            ref = e["valueFrom"]["secretKeyRef"]          # never an inline value
            assert "value" not in e and ref["name"] == secret["metadata"]["name"] and ref["key"] == e["name"]
    assert {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})} == set(secret["stringData"])
    assert all(v == "" for v in secret["stringData"].values()), "the example must hold no secret"
    compose_secrets = {k for k in compose()["services"]["worker-1"]["environment"] if k in SECRET_SETTINGS}
    assert compose_secrets <= set(secret["stringData"])
    # What a pod gets parses, as prod (which refuses missing server addresses).
    resolved = {**config, "APP_WEB_ADVERTISED_HOST": "txpipe-worker-0.txpipe-worker", "APP_POSTGRES_PASSWORD": "x"}
    s = Settings.load(resolved)
    assert s.env == "prod" and s.store == "rocksdb://" and s.advertised_host == "txpipe-worker-0.txpipe-worker"


def test_statefulset_probes_volume_identity_and_scrape_annotations() -> None:
    sts, config, container = k8s("StatefulSet"), k8s("ConfigMap")["data"], worker_container()
    pod = sts["spec"]["template"]
    port = int(config["APP_WEB_PORT"])
    assert config["APP_WEB_HOST"] == "0.0.0.0"
    (http_port,) = container["ports"]
    assert http_port == {"name": "http", "containerPort": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                              "prometheus.io/path": "/metrics"}
    # a volume per worker on the data directory, writable by the image's user (nobody)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount == {"name": claim["metadata"]["name"], "mountPath": config["APP_DATA_DIR"]}
    security = pod["spec"]["securityContext"]
    assert security["runAsUser"] == security["fsGroup"] == 65534 and security["runAsNonRoot"] is True
    # a stable identity: the pod name, reachable through the headless Service
    service = k8s("Service")
    assert service["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == service["metadata"]["name"]
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    advertised = next(e for e in container["env"] if e["name"] == "APP_WEB_ADVERTISED_HOST")
    assert advertised["value"] == f"$(POD_NAME).{service['metadata']['name']}"
    assert [e["name"] for e in container["env"]].index("POD_NAME") == 0     # defined before it is used
    # one selector for the pods, the Service and the budget
    labels = pod["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == labels and pdb["spec"]["maxUnavailable"] == 1
