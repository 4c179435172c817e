# shellcheck shell=bash
# Cassandra (CQL) for scripts/stack: one node of Apache Cassandra 5.0, its jars fetched from
# Maven Central, run as a plain JVM (JDK 17) on $STACK_HOST.
#   CQL on $CQL_PORT, storage (gossip) on $CASSANDRA_STORAGE_PORT, JMX on 127.0.0.1:$CASSANDRA_JMX_PORT.
# Templates (pom, cassandra.yaml, logback.xml, JVM flags) live in stack.d/cassandra/; the node's
# config and data in $STACK_DIR/cassandra/.  kill_tree (TERM) is a clean stop: the JVM drains
# (flushes memtables) in its shutdown hook, so there is no cassandra_stop.

: "${CASSANDRA_JMX_PORT:=17199}"
: "${CASSANDRA_HEAP:=1G}"   # maximum heap; it starts at 256M because Cassandra mlockall()s
                             # (MCL_CURRENT) what is committed at start, making it all resident
CASSANDRA_TEMPLATES=$(cd "$(dirname "${BASH_SOURCE[0]}")/cassandra" && pwd)
CASSANDRA_VERSION=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$CASSANDRA_TEMPLATES/pom.xml")
CASSANDRA_HOME=$CACHE_DIR/cassandra-$CASSANDRA_VERSION
CASSANDRA_DIR=$STACK_DIR/cassandra

# _cassandra_put <template> <target>: render a template; rewrite the target only when it changes.
_cassandra_put() {
  local text
  text=$(sed -e "s|@DIR@|$CASSANDRA_DIR|g" -e "s|@HOST@|$STACK_HOST|g" \
             -e "s|@CQL_PORT@|$CQL_PORT|g" -e "s|@STORAGE_PORT@|$CASSANDRA_STORAGE_PORT|g" "$1")
  if [ ! -f "$2" ] || [ "$(cat "$2")" != "$text" ]; then printf '%s\n' "$text" >"$2"; fi
}

cassandra_install() {
  [ -n "$CASSANDRA_VERSION" ] || die "no <cassandra.version> in $CASSANDRA_TEMPLATES/pom.xml"
  mvn_fetch "$CASSANDRA_HOME" "$CASSANDRA_TEMPLATES/pom.xml"
  mkdir -p "$CASSANDRA_DIR/data" "$CASSANDRA_DIR/triggers"
  _cassandra_put "$CASSANDRA_TEMPLATES/cassandra.yaml" "$CASSANDRA_DIR/cassandra.yaml"
  _cassandra_put "$CASSANDRA_TEMPLATES/logback.xml" "$CASSANDRA_DIR/logback.xml"
}

cassandra_start() {
  local lib=$CASSANDRA_HOME/lib jamm jv
  jv=$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p')
  case $jv in 11|17) ;; *) die "Cassandra $CASSANDRA_VERSION runs on JDK 11 or 17, $JAVA is '$jv' (set STACK_JAVA)" ;; esac
  jamm=$(compgen -G "$lib/jamm-*.jar" | head -n 1) || die "no jamm jar in $lib (run: scripts/stack up cassandra)"
  spawn cassandra "$JAVA" "@$CASSANDRA_TEMPLATES/jvm17.options" \
    -Xms256M "-Xmx$CASSANDRA_HEAP" \
    "-XX:ErrorFile=$CASSANDRA_DIR/hs_err_pid%p.log" \
    "-javaagent:$jamm" \
    "-Dcassandra.config=file://$CASSANDRA_DIR/cassandra.yaml" \
    "-Dcassandra.storagedir=$CASSANDRA_DIR/data" \
    "-Dcassandra.logdir=$CASSANDRA_DIR/logs" \
    "-Dcassandra.triggers_dir=$CASSANDRA_DIR/triggers" \
    "-Dcassandra.jmx.local.port=$CASSANDRA_JMX_PORT" \
    "-Dcom.sun.management.jmxremote.rmi.port=$CASSANDRA_JMX_PORT" \
    -Dcom.sun.management.jmxremote.authenticate=false \
    "-Dlogback.configurationFile=$CASSANDRA_DIR/logback.xml" \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon
}

cassandra_ready() {
  $PROBE cql "$STACK_HOST" "$CQL_PORT"
}
