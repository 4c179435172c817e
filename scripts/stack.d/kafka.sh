# shellcheck shell=bash
# Apache Kafka, one KRaft node (broker + controller), from Maven Central jars.
# A second listener speaks SASL/SCRAM-SHA-512 for the security tests; its user and a
# generated password live in $STACK_DIR/kafka/scram.env, never in the repository. A third
# speaks SASL_SSL (SCRAM over TLS, as on MSK) with a certificate for $STACK_HOST signed by a
# local CA made once with the JDK's keytool; clients trust $STACK_DIR/kafka/tls/ca.pem.

KAFKA_VERSION=4.1.1
KAFKA_HOME=$CACHE_DIR/kafka-$KAFKA_VERSION
KAFKA_DIR=$STACK_DIR/kafka
KAFKA_POM=$ROOT/scripts/stack.d/kafka/pom.xml
KAFKA_TLS_DIR=$KAFKA_DIR/tls
: "${KAFKA_SSL_PORT:=19095}"

kafka_java() {
  "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/stack.d/kafka/log4j2.properties" \
    -cp "$KAFKA_HOME/lib/*" "$@"
}

kafka_install() {
  mvn_fetch "$KAFKA_HOME" "$KAFKA_POM"
  mkdir -p "$KAFKA_DIR"
  kafka_tls
  # Written on every install, not only before formatting, so that a listener added later
  # reaches existing installs too (their data is kept; a running Kafka needs a restart).
  kafka_properties
  [ -f "$KAFKA_DIR/data/meta.properties" ] && return 0
  if [ ! -f "$KAFKA_DIR/scram.env" ]; then
    printf 'KAFKA_SCRAM_USER=app\nKAFKA_SCRAM_PASSWORD=%s\n' \
      "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$KAFKA_DIR/scram.env"
    chmod 600 "$KAFKA_DIR/scram.env"
  fi
  # shellcheck disable=SC1091
  source "$KAFKA_DIR/scram.env"
  log "formatting Kafka storage in $KAFKA_DIR/data"
  kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
    -c "$KAFKA_DIR/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$KAFKA_SCRAM_PASSWORD]" \
    >"$LOG_DIR/kafka-format.log" 2>&1 || { show_log kafka-format; die "kafka storage format failed"; }
}

# kafka_tls: a local CA and a broker key + certificate (SAN $STACK_HOST, localhost), once.
kafka_tls() {
  [ -f "$KAFKA_TLS_DIR/broker.p12" ] && [ -f "$KAFKA_TLS_DIR/ca.pem" ] && return 0
  local kt pass tmp=$KAFKA_TLS_DIR.tmp san
  kt=${STACK_KEYTOOL:-$(dirname "$(readlink -f "$JAVA")")/keytool}
  [ -x "$kt" ] || kt=$(command -v keytool) || die "keytool (part of the JDK) not found; set STACK_KEYTOOL"
  if [[ $STACK_HOST =~ ^[0-9.]+$ ]]; then san=ip:$STACK_HOST,dns:localhost; else san=dns:$STACK_HOST,dns:localhost; fi
  log "making a local CA and a TLS certificate for Kafka in $KAFKA_TLS_DIR"
  rm -rf "$tmp" && mkdir -p "$tmp" && chmod 700 "$tmp"
  pass=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  (
    cd "$tmp" || exit 1
    ktool() { "$kt" "$@" -storetype PKCS12 -storepass "$pass" >>keytool.log 2>&1; }
    ktool -genkeypair -keystore ca.p12 -alias ca -dname "CN=txpipe local stack CA" -keyalg RSA \
       -keysize 2048 -validity 3650 -ext bc:c &&
    ktool -exportcert -rfc -keystore ca.p12 -alias ca -file ca.pem &&
    ktool -genkeypair -keystore broker.p12 -alias broker -dname "CN=$STACK_HOST" -keyalg RSA \
       -keysize 2048 -validity 3650 &&
    ktool -certreq -keystore broker.p12 -alias broker -file broker.csr &&
    ktool -gencert -keystore ca.p12 -alias ca -infile broker.csr -outfile broker.pem -rfc -validity 3650 \
       -ext "SAN=$san" -ext ku:c=digitalSignature,keyEncipherment -ext eku=serverAuth &&
    ktool -importcert -noprompt -keystore broker.p12 -alias ca -file ca.pem &&
    ktool -importcert -keystore broker.p12 -alias broker -file broker.pem &&
    printf '%s\n' "$pass" >keystore.pass && chmod 600 keystore.pass ca.p12 broker.p12 && rm -f broker.csr
  ) || { tail -n 20 "$tmp/keytool.log" >&2; die "keytool failed making the Kafka TLS certificate"; }
  rm -rf "$KAFKA_TLS_DIR" && mv "$tmp" "$KAFKA_TLS_DIR"
}

kafka_properties() {
  local pass new=$KAFKA_DIR/server.properties.new
  pass=$(cat "$KAFKA_TLS_DIR/keystore.pass")
  cat >"$new" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$STACK_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$STACK_HOST:$KAFKA_PORT,SASL_PLAINTEXT://$STACK_HOST:$KAFKA_SASL_PORT,SASL_SSL://$STACK_HOST:$KAFKA_SSL_PORT,CONTROLLER://$STACK_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$STACK_HOST:$KAFKA_PORT,SASL_PLAINTEXT://$STACK_HOST:$KAFKA_SASL_PORT,SASL_SSL://$STACK_HOST:$KAFKA_SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$KAFKA_TLS_DIR/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
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
  chmod 600 "$new"
  if cmp -s "$new" "$KAFKA_DIR/server.properties"; then rm -f "$new"; return 0; fi
  mv -f "$new" "$KAFKA_DIR/server.properties"
  if is_running kafka; then
    log "Kafka's server.properties changed; restart it to apply: scripts/stack down kafka && scripts/stack up kafka"
  fi
}

kafka_start() {
  spawn kafka "$JAVA" -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/stack.d/kafka/log4j2.properties" \
    -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

kafka_ready() {
  $PROBE kafka "$STACK_HOST" "$KAFKA_PORT"
}
