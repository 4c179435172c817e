# shellcheck shell=bash
# PostgreSQL from Debian's packages, with its own data directory and port.
# initdb refuses to run as root, so the cluster belongs to the `postgres` system user.

PG_DIR=$STACK_DIR/postgres
PG_LOG=$LOG_DIR/postgres.log
# The server runs as the `postgres` user, which must be able to reach its directory; a
# checkout under a private directory (mktemp -d is 0700) is not reachable, so the cluster
# then lives in the postgres user's home, named after this checkout's stack directory.
if [ "$(id -u)" = 0 ] && ! su postgres -s /bin/sh -c "cd '$STACK_DIR'" 2>/dev/null; then
  PG_DIR=$(getent passwd postgres | cut -d: -f6)/txpipe-$(printf '%s' "$STACK_DIR" | cksum | cut -d' ' -f1)
  PG_LOG=$PG_DIR/postgres.log
fi
PG_DATA=$PG_DIR/data

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && echo "$d"
}

as_pg() {
  # bash, and inherited descriptors closed: the postmaster must not keep a caller's lock open.
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$CLOSE_FDS; $*"; else bash -c "$CLOSE_FDS; $*"; fi
}

postgres_install() {
  if [ -z "$(pg_bin)" ]; then
    log "installing PostgreSQL from Debian packages"
    [ "$(id -u)" = 0 ] || die "PostgreSQL is missing and apt-get needs root: apt-get install postgresql"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } \
      || die "apt-get install postgresql failed"
  fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $PG_DATA"
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
    [ "$PG_LOG" = "$LOG_DIR/postgres.log" ] || ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
    as_pg "'$(pg_bin)/initdb' -D '$PG_DATA' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" \
      >"$LOG_DIR/postgres-initdb.log" 2>&1 || { show_log postgres-initdb; die "initdb failed"; }
  fi
}

postgres_start() {
  # pg_ctl forks the postmaster; its pid file is the truth, copied to $RUN_DIR for status.
  : >"$PG_LOG"
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_LOG"
  as_pg "'$(pg_bin)/pg_ctl' -D '$PG_DATA' -l '$PG_LOG' \
    -o \"-k '$PG_DIR' -h $STACK_HOST -p $PG_PORT -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all\" start" \
    >/dev/null || { show_log postgres; die "pg_ctl start failed"; }
  head -n 1 "$PG_DATA/postmaster.pid" >"$RUN_DIR/postgres.pid"
}

postgres_ready() {
  "$(pg_bin)/pg_isready" -q -h "$STACK_HOST" -p "$PG_PORT" -U postgres \
    && psql -qtAX -h "$STACK_HOST" -p "$PG_PORT" -U postgres -d postgres -c 'select 1' >/dev/null
}

postgres_after_start() {
  # The application's database; tables come from the app's migrations, not from here.
  if [ "$(psql -qtAX -h "$STACK_HOST" -p "$PG_PORT" -U postgres -d postgres \
        -c "select 1 from pg_database where datname = 'app'")" != 1 ]; then
    psql -qX -h "$STACK_HOST" -p "$PG_PORT" -U postgres -d postgres -c 'create database app' >/dev/null
  fi
}

postgres_stop() {
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "'$(pg_bin)/pg_ctl' -D '$PG_DATA' -m fast -w stop" >/dev/null 2>&1 || kill_tree postgres
  fi
  rm -f "$RUN_DIR/postgres.pid"
}
