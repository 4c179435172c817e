# shellcheck shell=bash
# Prometheus (optional: `scripts/stack up prometheus`; plain `up` does not start it), from
# Debian's package (2.42, with promtool), run as this script's own process: the package's
# systemd service is left off. It loads deploy/prometheus as compose does, with the worker
# job pointed at local workers instead of compose's DNS (scripts/prometheus_config.py).
#
#   PROMETHEUS_PORT     its HTTP port (default 19090)
#   PROMETHEUS_TARGETS  workers to scrape, host:port comma-separated (default: the demo
#                       worker, 127.0.0.1:${APP_WEB_PORT:-6066})
#   PROMETHEUS_INTERVAL scrape and rule evaluation interval (default: deploy's, 15s)

: "${PROMETHEUS_PORT:=19090}"
: "${PROMETHEUS_TARGETS:=$STACK_HOST:${APP_WEB_PORT:-6066}}"
: "${PROMETHEUS_INTERVAL:=}"
PROM_DIR=$STACK_DIR/prometheus

prometheus_install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  log "installing Prometheus from Debian packages"
  [ "$(id -u)" = 0 ] || die "Prometheus is missing and apt-get needs root: apt-get install prometheus"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null \
    || { apt-get update -q >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; } \
    || die "apt-get install prometheus failed"
  prometheus_no_service
}

# Where systemd runs, the package starts its own service on :9090; this stack runs its own.
prometheus_no_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

prometheus_python() {
  if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"; else echo python3; fi
}

prometheus_start() {
  mkdir -p "$PROM_DIR/data"
  "$(prometheus_python)" "$ROOT/scripts/prometheus_config.py" --targets "$PROMETHEUS_TARGETS" \
    --interval "$PROMETHEUS_INTERVAL" >"$PROM_DIR/prometheus.yml" \
    || die "could not render $PROM_DIR/prometheus.yml from deploy/prometheus"
  promtool check config "$PROM_DIR/prometheus.yml" >"$LOG_DIR/prometheus-check.log" 2>&1 \
    || { show_log prometheus-check; die "deploy/prometheus does not load"; }
  spawn prometheus prometheus --config.file="$PROM_DIR/prometheus.yml" \
    --storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="$STACK_HOST:$PROMETHEUS_PORT"
}

prometheus_ready() {
  $PROBE http "http://$STACK_HOST:$PROMETHEUS_PORT/-/ready"
}
