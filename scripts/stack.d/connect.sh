# shellcheck shell=bash
# Kafka Connect (the broker's Kafka version, from Maven Central jars) with Debezium's
# PostgreSQL connector on its plugin path, for the account cache's change data capture
# (issue 16). REST API on http://$STACK_HOST:$CONNECT_PORT.
#
# Distributed mode, one worker: its connector configs, source offsets and statuses live in
# three compacted topics on the stack's broker (replication 1), so connectors registered
# through the REST API (tests register one per fresh database, devtools/connect.py) survive
# a restart of Connect and resume from their offsets, as in compose and Kubernetes, which
# run the same mode. Standalone mode would forget every connector registered over REST at
# each restart. scheduled.rebalance.max.delay.ms=0: a restarted single worker takes its
# connectors back at once instead of waiting out the 5 min grace for a "lost" worker.
# plugin.discovery=service_load: plugins are found through their ServiceLoader manifests
# (Kafka 4 and Debezium 3 ship them) instead of a reflective scan of every jar, which is
# most of a cold start here.

CONNECT_VERSION=4.1.1                 # = KAFKA_VERSION (kafka.sh)
DEBEZIUM_VERSION=3.6.1.Final
: "${CONNECT_PORT:=18083}"
: "${CONNECT_HEAP:=384m}"
CONNECT_HOME=$CACHE_DIR/connect-$CONNECT_VERSION
CONNECT_PLUGINS=$CACHE_DIR/connect-plugins-$DEBEZIUM_VERSION
CONNECT_DIR=$STACK_DIR/connect
CONNECT_URL=http://$STACK_HOST:$CONNECT_PORT

connect_install() {
  mvn_fetch "$CONNECT_HOME" "$ROOT/scripts/stack.d/connect/pom.xml"
  # One directory per plugin under plugin.path: Debezium and its own jars, isolated from
  # Connect's classpath (Kafka's artifacts are excluded in the pom: the runtime has them).
  mvn_fetch "$CONNECT_PLUGINS/debezium-connector-postgres" "$ROOT/scripts/stack.d/connect/debezium-pom.xml"
  mkdir -p "$CONNECT_DIR"
  cat >"$CONNECT_DIR/worker.properties" <<PROPS
bootstrap.servers=$STACK_HOST:$KAFKA_PORT
group.id=txpipe-connect
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=_connect-configs
offset.storage.topic=_connect-offsets
status.storage.topic=_connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
offset.storage.partitions=4
status.storage.replication.factor=1
status.storage.partitions=1
offset.flush.interval.ms=1000
scheduled.rebalance.max.delay.ms=0
listeners=http://$STACK_HOST:$CONNECT_PORT
rest.advertised.host.name=$STACK_HOST
rest.advertised.port=$CONNECT_PORT
plugin.path=$CONNECT_PLUGINS
plugin.discovery=service_load
topic.creation.enable=true
PROPS
}

connect_start() {
  # Connect asks the broker for its cluster id at start and exits when there is none yet:
  # started beside Kafka by one `up`, it waits for the broker first.
  local t0=$SECONDS
  until kafka_ready >/dev/null 2>&1; do
    (( SECONDS - t0 < 120 )) || die "connect needs Kafka at $STACK_HOST:$KAFKA_PORT, which did not answer in 120s"
    sleep 1
  done
  spawn connect "$JAVA" -Xms64m -Xmx"$CONNECT_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/stack.d/connect/log4j2.properties" \
    -cp "$CONNECT_HOME/lib/*" org.apache.kafka.connect.cli.ConnectDistributed "$CONNECT_DIR/worker.properties"
}

# Ready: the REST API answers and the worker has joined its group (the plugin list needs it
# to have started; connectors can then be registered).
connect_ready() {
  $PROBE http "$CONNECT_URL/connector-plugins" \
    && curl -fsS --noproxy '*' "$CONNECT_URL/connector-plugins" | grep -q PostgresConnector
}
