#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, combined broker+controller) on
# 127.0.0.1 for the eventml test suite, run straight from the official jars on
# Maven Central. See docs/kafka-broker.md.
#
#   scripts/kafka/broker.sh fetch    # download broker jars into the cache (idempotent)
#   scripts/kafka/broker.sh start    # fetch if needed, format a fresh dir, start, wait until ready
#   scripts/kafka/broker.sh start --keep   # restart on the existing dir (data kept); fresh if none
#   scripts/kafka/broker.sh stop     # SIGTERM by pid, bounded wait, then SIGKILL
#   scripts/kafka/broker.sh status   # exit 0 if running, 3 if not
#
# Environment (all optional):
#   EVENTML_KAFKA_CACHE          jar cache       (default ~/.cache/eventml/kafka-<version>)
#   EVENTML_KAFKA_DIR            data/log dir    (default /tmp/eventml-kafka; wiped by start)
#   EVENTML_KAFKA_PORT           client port     (default 19092)
#   EVENTML_KAFKA_CONTROLLER_PORT controller port (default client port + 1)
#   EVENTML_KAFKA_HEAP           JVM heap opts   (default "-Xms256m -Xmx512m")
#   EVENTML_KAFKA_START_TIMEOUT  seconds         (default 60)
#   EVENTML_KAFKA_STOP_TIMEOUT   seconds         (default 30)
#   EVENTML_KAFKA_PYTHON         python with confluent_kafka used for the readiness probe
#                                (default: <repo>/.venv/bin/python, then python3; if none can
#                                import confluent_kafka the probe falls back to log line + TCP)
#   EVENTML_KAFKA_M2             Maven local repo for fetch (default: a temp dir in the
#                                cache, deleted afterwards, so the cache is self-contained)
#   JAVA_HOME / JAVA             java to use
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd -- "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
[ -n "$KAFKA_VERSION" ] || { echo "broker.sh: cannot read kafka.version from $POM" >&2; exit 2; }

CACHE="${EVENTML_KAFKA_CACHE:-$HOME/.cache/eventml/kafka-$KAFKA_VERSION}"
LIBS="$CACHE/libs"
MARKER="$LIBS/.eventml-complete"
DIR="${EVENTML_KAFKA_DIR:-/tmp/eventml-kafka}"
PORT="${EVENTML_KAFKA_PORT:-19092}"
CPORT="${EVENTML_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOST=127.0.0.1
HEAP="${EVENTML_KAFKA_HEAP:--Xms256m -Xmx512m}"
START_TIMEOUT="${EVENTML_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${EVENTML_KAFKA_STOP_TIMEOUT:-30}"
PIDFILE="$DIR/broker.pid"
PROPS="$DIR/server.properties"
LOG4J="$DIR/log4j2.properties"
LOGDIR="$DIR/logs"
SERVER_LOG="$LOGDIR/server.log"
CONSOLE_LOG="$LOGDIR/console.out"
DIR_TAG="$DIR/.eventml-kafka-dir"   # marks a directory this script may wipe

if [ -n "${JAVA:-}" ]; then :
elif [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java
fi

log() { echo "broker.sh: $*" >&2; }
die() { log "$*"; exit 1; }

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }

fetch_complete() {
    [ -f "$MARKER" ] && [ "$(cat "$MARKER" 2>/dev/null)" = "$(pom_digest)" ]
}

cmd_fetch() {
    if fetch_complete; then
        [ "${1:-}" = quiet ] || log "kafka $KAFKA_VERSION jars already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needs Maven 3.x and Java 17+)"
    mkdir -p "$CACHE"
    exec 8>"$CACHE/.fetch.lock"
    flock -w 900 8 || die "timed out waiting for $CACHE/.fetch.lock"
    if fetch_complete; then exec 8>&-; return 0; fi   # another process fetched meanwhile
    local tmp="$CACHE/libs.tmp.$$"
    local m2="${EVENTML_KAFKA_M2:-$CACHE/m2.tmp.$$}"
    rm -rf "$tmp"
    FETCH_CLEANUP=("$tmp")
    [ -n "${EVENTML_KAFKA_M2:-}" ] || FETCH_CLEANUP+=("$m2")
    trap 'rm -rf "${FETCH_CLEANUP[@]}"' EXIT
    log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and runtime deps from Maven Central"
    local t0=$SECONDS
    mvn -B -q -Dstyle.color=never -f "$POM" -Dmaven.repo.local="$m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' >&2   # Maven 3.8 -q still emits bare ANSI resets
    [ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || die "fetch did not produce kafka_2.13-$KAFKA_VERSION.jar"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_digest >"$MARKER.tmp" && mv "$MARKER.tmp" "$MARKER"   # written last
    rm -rf "${FETCH_CLEANUP[@]}"
    trap - EXIT
    exec 8>&-
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) into $LIBS in $((SECONDS - t0))s"
}

# Is $1 a live (non-zombie) process running *our* broker (kafka.Kafka with our props)?
is_our_broker() {
    local pid="$1"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    local state
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)"
    [ "$state" != "Z" ] && [ "$state" != "X" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$PROPS" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF kafka.Kafka
}

# Client port of the broker described by $PROPS (may differ from $PORT if env changed).
props_port() {
    sed -n 's/^advertised\.listeners=PLAINTEXT:\/\/[^,]*:\([0-9]*\).*/\1/p' "$PROPS" 2>/dev/null | head -n1
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    is_our_broker "$pid" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

probe_python() {
    local py
    for py in "${EVENTML_KAFKA_PYTHON:-}" "$REPO_DIR/.venv/bin/python" python3; do
        [ -n "$py" ] || continue
        if "$py" -c 'import confluent_kafka' 2>/dev/null; then echo "$py"; return 0; fi
    done
    return 1
}

# One readiness probe: metadata request answered by the broker, listing itself.
broker_answers() {
    local py="$1"
    if [ -n "$py" ]; then
        "$py" - "$HOST:$PORT" <<'EOF' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0}).list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
EOF
    else
        port_open "$PORT"
    fi
}

write_config() {
    local logdirs="$DIR/data"
    cat >"$PROPS" <<EOF
# Generated by scripts/kafka/broker.sh -- single-node KRaft test broker.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CPORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$logdirs

# One node: every internal topic must have replication factor 1 / min ISR 1,
# otherwise consumer groups and transactions never become available.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Internal topics are created lazily on first group / transactional use;
# fewer partitions make that first use fast (defaults are 50 each).
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

# Tests: no rebalance delay, explicit topic creation only.
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true

# Never delete data by age or size (tests may replay records with old timestamps).
log.retention.ms=-1
log.retention.bytes=-1

# Small machine (2 cores shared with the tests).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF

    cat >"$LOG4J" <<EOF
# Generated by scripts/kafka/broker.sh: everything to $SERVER_LOG (format.log for the
# storage format step), nothing to the console.
status = warn
# Keep logging during the broker's own shutdown hook (log4j2's hook would otherwise
# close the appender first and the shutdown sequence would be missing from the log).
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = \${sys:kafka.logs.dir}/\${sys:eventml.kafka.logname}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

fresh_dir() {
    if [ -e "$DIR" ]; then
        # Refuse to wipe a directory this script did not create.
        if [ -f "$DIR_TAG" ] || [ -z "$(ls -A "$DIR" 2>/dev/null)" ]; then
            rm -rf "$DIR"
        else
            die "$DIR exists and was not created by broker.sh; set EVENTML_KAFKA_DIR or remove it"
        fi
    fi
    mkdir -p "$DIR/data" "$LOGDIR"
    : >"$DIR_TAG"
}

cluster_id() {
    # Kafka cluster ids are 16 random bytes, base64url without padding (22 chars).
    # One in 64 starts with '-', which the storage tool's argument parser takes for an
    # option ("--cluster-id: expected one argument"): draw again.
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [ "${id:0:1}" != "-" ] && break
    done
    printf '%s' "$id"
}

# A directory that a previous start formatted (and whose config is still there).
formatted_dir() {
    [ -f "$DIR_TAG" ] && [ -f "$PROPS" ] && [ -f "$LOG4J" ] && [ -f "$DIR/data/meta.properties" ]
}

cmd_start() {
    local keep="${1:-}" pid
    if pid="$(running_pid)"; then
        echo "kafka already running on $HOST:$(props_port) (pid $pid)"
        return 0
    fi
    command -v "$JAVA" >/dev/null || die "java not found (need Java 17+)"
    if port_open "$PORT" || port_open "$CPORT"; then
        die "port $PORT or $CPORT on $HOST is already in use (not by a broker from this script with EVENTML_KAFKA_DIR=$DIR)"
    fi
    cmd_fetch quiet
    local t0=$SECONDS
    local jvm=(-Dlog4j2.configurationFile="file:$LOG4J" -Dkafka.logs.dir="$LOGDIR"
               -Djava.awt.headless=true -XX:+ExitOnOutOfMemoryError)
    if [ "$keep" = --keep ] && formatted_dir; then
        [ "$(props_port)" = "$PORT" ] || die "$DIR was formatted for port $(props_port), not $PORT"
        log "keeping the data in $DIR (restart)"
        # The readiness check looks for "Kafka Server started": not the previous run's line.
        if [ -f "$SERVER_LOG" ]; then mv -f "$SERVER_LOG" "$SERVER_LOG.previous"; fi
    else
        fresh_dir
        write_config
        start_format "${jvm[@]}"
    fi
    start_broker "$t0" "${jvm[@]}"
}

start_format() {
    local jvm=("$@") cid
    cid="$(cluster_id)"
    # Format the storage dir: KRaft needs meta.properties + a bootstrap checkpoint.
    # --standalone makes this node the single voter of a dynamic controller quorum.
    if ! "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 "${jvm[@]}" -Deventml.kafka.logname=format.log \
            -cp "$LIBS/*" kafka.tools.StorageTool \
            format --config "$PROPS" --cluster-id "$cid" --standalone \
            >"$LOGDIR/format.out" 2>&1; then
        cat "$LOGDIR/format.out" >&2
        die "storage format failed"
    fi
}

start_broker() {
    local t0="$1" pid
    shift
    local jvm=("$@")
    # shellcheck disable=SC2086
    nohup "$JAVA" $HEAP "${jvm[@]}" -Deventml.kafka.logname=server.log -cp "$LIBS/*" kafka.Kafka "$PROPS" \
        </dev/null >"$CONSOLE_LOG" 2>&1 9>&- &   # 9>&-: the broker must not hold our lock
    pid=$!
    echo "$pid" >"$PIDFILE"

    local py=""
    py="$(probe_python)" || py=""
    local deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if ! is_our_broker "$pid"; then
            log "broker process $pid exited during startup"
            fail_start "$pid"
        fi
        if grep -q "Kafka Server started" "$SERVER_LOG" 2>/dev/null && broker_answers "$py"; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "broker not ready after ${START_TIMEOUT}s"
            fail_start "$pid"
        fi
        sleep 0.5
    done
    echo "kafka ready on $HOST:$PORT (pid $pid) in $((SECONDS - t0))s; logs in $LOGDIR"
}

fail_start() {
    local pid="$1"
    log "---- tail of $SERVER_LOG ----"
    tail -n 60 "$SERVER_LOG" >&2 2>/dev/null || true
    if [ -s "$CONSOLE_LOG" ]; then
        log "---- tail of $CONSOLE_LOG ----"
        tail -n 30 "$CONSOLE_LOG" >&2 || true
    fi
    if is_our_broker "$pid"; then kill_pid "$pid"; fi
    rm -f "$PIDFILE"
    exit 1
}

kill_pid() {
    local pid="$1" deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while is_our_broker "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if is_our_broker "$pid"; then
        log "pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while is_our_broker "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    fi
    ! is_our_broker "$pid"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        echo "kafka not running (dir $DIR)"
        return 0
    fi
    local t0=$SECONDS
    kill_pid "$pid" || die "could not stop pid $pid"
    rm -f "$PIDFILE"
    echo "kafka stopped (pid $pid) in $((SECONDS - t0))s"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "kafka running on $HOST:$(props_port) (pid $pid), dir $DIR, version $KAFKA_VERSION"
        return 0
    fi
    echo "kafka not running (dir $DIR, version $KAFKA_VERSION, jars $(fetch_complete && echo cached || echo 'not fetched'))"
    return 3
}

# Serialise start/stop (e.g. several pytest-xdist workers calling start at once).
lock() {
    mkdir -p "$(dirname -- "$DIR")"
    exec 9>"$DIR.lock"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT + 60)) 9 || die "timed out waiting for lock $DIR.lock"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start)
        case "${2:-}" in ""|--keep) ;; *) echo "usage: $0 start [--keep]" >&2; exit 2 ;; esac
        lock; cmd_start "${2:-}" ;;
    stop) lock; cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {fetch|start [--keep]|stop|status}" >&2; exit 2 ;;
esac
