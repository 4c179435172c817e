# shellcheck shell=bash
# Apache Kafka, one KRaft node (broker + controller), from Maven Central jars.
# A second listener speaks SASL/SCRAM-SHA-512 for the security tests; its user and a
# generated password live in $STACK_DIR/kafka/scram.env, never in the repository.

KAFKA_VERSION=4.1.1
KAFKA_HOME=$CACHE_DIR/kafka-$KAFKA_VERSION
KAFKA_DIR=$STACK_DIR/kafka
KAFKA_POM=$ROOT/scripts/stack.d/kafka/pom.xml

kafka_java() {
  "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/stack.d/kafka/log4j2.properties" \
    -cp "$KAFKA_HOME/lib/*" "$@"
}

kafka_install() {
  mvn_fetch "$KAFKA_HOME" "$KAFKA_POM"
  [ -f "$KAFKA_DIR/data/meta.properties" ] && return 0
  mkdir -p "$KAFKA_DIR"
  if [ ! -f "$KAFKA_DIR/scram.env" ]; then
    printf 'KAFKA_SCRAM_USER=app\nKAFKA_SCRAM_PASSWORD=%s\n' \
      "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$KAFKA_DIR/scram.env"
    chmod 600 "$KAFKA_DIR/scram.env"
  fi
  # shellcheck disable=SC1091
  source "$KAFKA_DIR/scram.env"
  cat >"$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$STACK_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$STACK_HOST:$KAFKA_PORT,SASL_PLAINTEXT://$STACK_HOST:$KAFKA_SASL_PORT,CONTROLLER://$STACK_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$STACK_HOST:$KAFKA_PORT,SASL_PLAINTEXT://$STACK_HOST:$KAFKA_SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$KAFKA_DIR/data
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
PROPS
  log "formatting Kafka storage in $KAFKA_DIR/data"
  kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
    -c "$KAFKA_DIR/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$KAFKA_SCRAM_PASSWORD]" \
    >"$LOG_DIR/kafka-format.log" 2>&1 || { show_log kafka-format; die "kafka storage format failed"; }
}

kafka_start() {
  spawn kafka "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/stack.d/kafka/log4j2.properties" \
    -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

kafka_ready() {
  $PROBE kafka "$STACK_HOST" "$KAFKA_PORT"
}
