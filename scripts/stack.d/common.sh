# shellcheck shell=bash
# Shared helpers for scripts/stack: paths, ports, process control and waiting.
# Each component file (kafka.sh, postgres.sh, ...) defines <name>_install, <name>_start,
# <name>_ready and, when a plain kill is not right, <name>_stop.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
CACHE_DIR=$STACK_DIR/cache          # downloads (maven repo, tarballs): kept across `down`
RUN_DIR=$STACK_DIR/run              # pid files of the processes this script started
LOG_DIR=$STACK_DIR/logs
PROBE="python3 $ROOT/scripts/probe.py"
JAVA=${STACK_JAVA:-$(command -v java)}

# Ports chosen away from the usual defaults so a machine's own servers do not clash.
: "${STACK_HOST:=127.0.0.1}"
: "${KAFKA_PORT:=19092}"
: "${KAFKA_SASL_PORT:=19094}"
: "${KAFKA_CONTROLLER_PORT:=19093}"
: "${PG_PORT:=15432}"
: "${CQL_PORT:=19042}"
: "${CASSANDRA_STORAGE_PORT:=17000}"
: "${REGISTRY_PORT:=18081}"

mkdir -p "$CACHE_DIR" "$RUN_DIR" "$LOG_DIR"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# mvn_fetch <dir> <pom-file>: copy the runtime classpath of a pom into <dir>/lib, once.
mvn_fetch() {
  local dir=$1 pom=$2
  if [ -f "$dir/.fetched" ] && [ "$dir/.fetched" -nt "$pom" ]; then return 0; fi
  mkdir -p "$dir"
  log "downloading $(basename "$dir") from Maven Central (cached in $CACHE_DIR/m2)"
  rm -rf "$dir/lib"
  mvn -B -q -Dstyle.color=never -f "$pom" -Dmaven.repo.local="$CACHE_DIR/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/lib" \
      || die "maven download for $(basename "$dir") failed"
  touch "$dir/.fetched"
}

# Bash snippet that closes every descriptor above 2 (see spawn).
CLOSE_FDS='for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null'

pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null; }

is_running() {
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# spawn <name> <cmd...>: start a server in its own session, log to $LOG_DIR/<name>.log.
spawn() {
  local name=$1; shift
  : >"$LOG_DIR/$name.log"
  # The server records its own pid before exec: it leads a new session, so `down` can
  # signal its whole process group (setsid may fork, which would make $! the wrong pid).
  # Descriptors inherited from the caller are closed first: a server must not hold, say, a
  # lock file that the caller's `flock` had open, for the rest of its life.
  setsid bash -c "$CLOSE_FDS"'; echo $$ >"$0"; exec "$@"' "$RUN_DIR/$name.pid" "$@" \
    >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 50); do [ -s "$RUN_DIR/$name.pid" ] && break; sleep 0.1; done
}

show_log() {
  local name=$1
  printf '\n----- last 40 lines of %s -----\n' "$LOG_DIR/$name.log" >&2
  tail -n 40 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
  printf -- '-----\n' >&2
}

# wait_ready <name> <seconds>: poll <name>_ready until it answers; fail with the log.
wait_ready() {
  local name=$1 limit=$2 start=$SECONDS
  while ! "${name}_ready" >/dev/null 2>&1; do
    if ! is_running "$name"; then
      show_log "$name"; die "$name exited during start-up"
    fi
    if (( SECONDS - start > limit )); then
      show_log "$name"; die "$name did not answer within ${limit}s"
    fi
    sleep 1
  done
}

# kill_tree <name>: stop the process group started by spawn, TERM then KILL.
kill_tree() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
}
