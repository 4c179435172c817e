# shellcheck shell=bash
# Schema Registry for scripts/stack: Apicurio Registry 2.6 (in-memory H2 storage) serving
# the Confluent-compatible API under http://$STACK_HOST:$REGISTRY_PORT/apis/ccompat/v7.
#
# Why 2.6.13.Final: it is the last 2.x release and runs on the JDK 17 that is the machine's
# default `java`; 3.x is compiled for Java 21 and renames every setting (apicurio.*), so it
# would need the Temurin 25 JDK for no gain here. The Maven Central artifact
# io.apicurio:apicurio-registry-app:<ver>:all:tar.gz is a Quarkus "legacy-jar" build:
# apicurio-registry-app-<ver>-runner.jar plus lib/ (no quarkus-run.jar, no top folder).
# The default "prod" profile keeps everything in an in-memory H2 database, so every start
# begins empty and `down` loses all schemas (producers simply register them again).
#
# Behaviour of the ccompat API, checked by hand against 2.6.13.Final:
#  - POST /subjects/<s>/versions {"schema": "..."} answers {"id": N}. N is the *content id*
#    (registry.ccompat.legacy-id-mode.enabled=false, the default, pinned below), which is
#    global across subjects and is what GET /schemas/ids/N resolves, so the id written in
#    the Confluent wire format round-trips. With legacy-id-mode on it would be the global
#    (per-version) id instead; don't turn it on.
#  - The same schema registered again (same or another subject) gets the same id. Ids can
#    skip numbers (a content id is drawn even when the content turns out to exist already).
#  - Apicurio's own default is no compatibility rule at all (GET /config says NONE), unlike
#    Confluent's BACKWARD. registry_after_start therefore PUTs the global level
#    $REGISTRY_COMPATIBILITY (default BACKWARD, like Confluent) through the ccompat API
#    itself, so GET/PUT /config then behave as in Confluent. (Setting the default with
#    -Dregistry.rules.global.compatibility instead enforces it but GET /config then still
#    says NONE and PUT /config answers 404, so it is not used.)
#  - Incompatible registration: HTTP 409 {"error_code":409,...}, as in Confluent.
#    POST /compatibility/subjects/<s>/versions/latest answers {"is_compatible": bool}.
#  - Quirk: PUT /config/<subject> {"compatibility":"NONE"} does not override a stricter
#    global level; Apicurio deletes the subject's rule, so the global rule applies again.
#    Any other subject level does override the global one. Work-around when really needed:
#    POST /apis/registry/v2/groups/default/artifacts/<subject>/rules
#         {"type":"COMPATIBILITY","config":"NONE"}.
#    GET /config/<subject> answers the subject's own rule or NONE (Confluent: 40408), and
#    40401 if the subject does not exist.
#  - Schemas are matched by canonical form (registry.ccompat.use-canonical-hash=true), so a
#    re-registration that differs only in whitespace/key order gets the existing id and
#    version, as Confluent does. Quirks: the canonical form also ignores "doc", so a
#    doc-only change is not a new version; and the first registration of a differently
#    formatted copy under a *new* subject still gets a new id (Confluent would reuse it).
#  - DELETE /subjects/<s> answers the deleted versions ([1,...]) but deletes for good:
#    ?deleted=true lists nothing and ?permanent=true is accepted but not needed.
#    DELETE /config (reset global level) is not implemented (405).
#  - Invalid schema: 422 {"error_code":42201}; unknown id: 404 40403; unknown subject:
#    404 40401 (same codes as Confluent, different messages).
#
# The server runs with an empty environment (env -i) and in its own directory: Apicurio maps
# many plain variables (HTTP_PORT, LOG_LEVEL, KAFKA_BOOTSTRAP_SERVERS -> sends registry
# events to Kafka, REGISTRY_AUTH_ENABLED, ...) and Quarkus also reads ./.env and
# ./config/application.properties from its working directory; none of that may leak in
# from the caller's shell or the project root. Authentication, Sentry and registry events
# are off; nothing talks to the network. Besides the HTTP port the JVM holds an unused
# ephemeral listening socket on 127.0.0.1 (transaction manager), harmless.

REGISTRY_APICURIO_VERSION=2.6.13.Final
: "${REGISTRY_COMPATIBILITY:=BACKWARD}"   # global level set after start; NONE = leave unset
: "${REGISTRY_HEAP:=384m}"
REGISTRY_DIR=$CACHE_DIR/registry-$REGISTRY_APICURIO_VERSION
REGISTRY_URL=http://$STACK_HOST:$REGISTRY_PORT/apis/ccompat/v7

registry_install() {
  local ver=$REGISTRY_APICURIO_VERSION dir=$REGISTRY_DIR
  [ -f "$dir/.installed" ] && return 0
  local name=apicurio-registry-app-$ver-all.tar.gz
  local url=https://repo1.maven.org/maven2/io/apicurio/apicurio-registry-app/$ver/$name
  local tgz=$CACHE_DIR/$name want got
  if [ ! -f "$tgz" ]; then
    want=$(curl -fsSL --retry 3 "$url.sha1" | awk '{print $1}') || want=
    [[ $want =~ ^[0-9a-f]{40}$ ]] || die "could not read the checksum $url.sha1"
    # A .part left by an interrupted download is resumed; a complete but corrupt one is
    # thrown away and fetched once more from scratch.
    local try
    for try in 1 2; do
      if [ ! -f "$tgz.part" ] || [ "$(sha1sum <"$tgz.part" | cut -c1-40)" != "$want" ]; then
        log "downloading Apicurio Registry $ver (~140 MB) from Maven Central into $CACHE_DIR"
        curl -fL --retry 3 --retry-delay 2 -C - -o "$tgz.part" "$url" \
          || { rm -f "$tgz.part"; curl -fL --retry 3 -o "$tgz.part" "$url"; } \
          || die "download of $url failed"
      fi
      got=$(sha1sum <"$tgz.part" | cut -c1-40)
      [ "$got" = "$want" ] && break
      log "checksum mismatch for $name (got $got, want $want)"
      rm -f "$tgz.part"
      [ $try = 2 ] && die "download of $url does not match its .sha1"
    done
    mv -f "$tgz.part" "$tgz"
  fi
  log "unpacking $name into $dir"
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp"
  tar -xzf "$tgz" -C "$dir.tmp" || { rm -rf "$dir.tmp"; die "could not unpack $tgz"; }
  [ -f "$dir.tmp/apicurio-registry-app-$ver-runner.jar" ] \
    || { rm -rf "$dir.tmp"; die "$name does not contain apicurio-registry-app-$ver-runner.jar"; }
  touch "$dir.tmp/.installed"
  mv "$dir.tmp" "$dir"
  rm -f "$tgz"   # the unpacked tree is the cache; keeping the tarball would double the disk use
}

# The Java to run it with: Quarkus 3.15 (inside Apicurio 2.6) needs Java 17 or newer.
registry_java() {
  local java=${REGISTRY_JAVA:-$JAVA} v
  [ -n "$java" ] && [ -x "$java" ] || die "no java found for the registry (set STACK_JAVA or REGISTRY_JAVA)"
  v=$("$java" -XshowSettings:properties -version 2>&1 | awk '$1 == "java.specification.version" {print $3}')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null \
    || die "the registry needs Java 17+, $java is ${v:-unknown} (set STACK_JAVA or REGISTRY_JAVA)"
  echo "$java"
}

registry_start() {
  local java work=$STACK_DIR/registry
  java=$(registry_java) || exit 1
  mkdir -p "$work/tmp"
  # Subshell: the server's working directory is $work (see the note on ./.env above).
  (
    cd "$work" || exit 1
    spawn registry env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 \
      "$java" -Xms64m -Xmx"$REGISTRY_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Djava.io.tmpdir="$work/tmp" \
      -Dquarkus.http.host="$STACK_HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dregistry.auth.enabled=false -Dquarkus.oidc.tenant-enabled=false \
      -Dregistry.enable.sentry=false \
      -Dregistry.events.ksink= -Dregistry.events.kafka.config.bootstrap.servers= \
      -Dregistry.ccompat.legacy-id-mode.enabled=false \
      -Dregistry.ccompat.use-canonical-hash=true \
      -Dquarkus.datasource.jdbc.initial-size=2 -Dquarkus.datasource.jdbc.min-size=2 \
      -Dquarkus.datasource.jdbc.max-size=20 \
      -jar "$REGISTRY_DIR/apicurio-registry-app-$REGISTRY_APICURIO_VERSION-runner.jar"
  )
}

registry_ready() {
  $PROBE http "$REGISTRY_URL/subjects"
}

# Runs once after a start by `up` (the storage is in memory, so every start is fresh).
registry_after_start() {
  [ "$REGISTRY_COMPATIBILITY" = NONE ] && return 0
  curl -fsS --noproxy '*' -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    --data "{\"compatibility\":\"$REGISTRY_COMPATIBILITY\"}" "$REGISTRY_URL/config" >/dev/null \
    || die "could not set the registry's global compatibility to $REGISTRY_COMPATIBILITY"
  log "registry global compatibility: $REGISTRY_COMPATIBILITY"
}
