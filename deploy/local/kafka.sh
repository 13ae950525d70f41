#!/usr/bin/env bash
# The local single-node Apache Kafka broker (KRaft, combined broker + controller).
#
#   kafka.sh fetch    resolve the broker's jars from Maven Central into the cache
#   kafka.sh up       format storage on first use, start, wait until ready (idempotent)
#   kafka.sh down     stop gracefully (idempotent); data stays on disk
#   kafka.sh status   exit 0 when the broker answers
#
# Settings (environment):
#   KAFKA_HOME_DIR   where jars, data and logs live (default: <repo>/.local/kafka)
#   KAFKA_PORT       client port on 127.0.0.1 (default 9092); controller uses KAFKA_PORT+1
#   KAFKA_HEAP       JVM heap (default 1g)
#   KAFKA_EXTRA_PROPERTIES  optional file appended to server.properties (later keys win),
#                    e.g. TLS or SASL listeners for tests
#   KAFKA_FORMAT_ARGS       optional extra arguments of the first storage format, e.g.
#                    --add-scram SCRAM-SHA-512=[name=...,password=...] (split on spaces, no quoting)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${KAFKA_HOME_DIR:-$repo/.local/kafka}
port=${KAFKA_PORT:-9092}
controller_port=$((port + 1))
heap=${KAFKA_HEAP:-1g}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs=$home/libs-$version
data=$home/data-$port
logs=$home/logs-$port
pidfile=$home/broker-$port.pid
config=$data/server.properties

log() { echo "kafka: $*" >&2; }

running_pid() {
  [[ -f $pidfile ]] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

# Java 17+ and Maven come from Debian's packages when missing and we may install them.
ensure_tools() {
  command -v java >/dev/null && command -v mvn >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing Java 17 and Maven from Debian's packages"
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
  command -v java >/dev/null || { log "Java 17+ is required to run Apache Kafka $version"; exit 1; }
  command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch Apache Kafka $version"; exit 1; }
}

fetch() {
  ensure_tools
  if [[ -f $libs/.complete ]]; then return 0; fi
  log "fetching Apache Kafka $version from Maven Central into $libs"
  rm -rf "$libs"
  mkdir -p "$libs"
  mkdir -p "$home"
  mvn -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >"$home/fetch.log" 2>&1 \
    || { tail -n 30 "$home/fetch.log" >&2; log "Maven could not fetch Kafka; see $home/fetch.log"; exit 1; }
  touch "$libs/.complete"
}

# Always called in a subshell: exec makes the JVM take the subshell's pid.
java_run() {
  exec java -Xms256m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$logs" \
    -cp "$libs/*" "$@"
}

write_config() {
  mkdir -p "$data" "$logs"
  cat >"$config" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/kraft
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
  if [[ -n ${KAFKA_EXTRA_PROPERTIES:-} ]]; then
    cat "$KAFKA_EXTRA_PROPERTIES" >>"$config"
  fi
}

format_storage() {
  [[ -f $data/kraft/meta.properties ]] && return 0
  write_config
  local cluster_id
  cluster_id=$(java_run kafka.tools.StorageTool random-uuid)
  log "formatting storage in $data (cluster $cluster_id)"
  local format_args=()
  read -r -a format_args <<<"${KAFKA_FORMAT_ARGS:-}"
  (java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$config" \
    ${format_args[@]+"${format_args[@]}"}) >"$logs/format.log" 2>&1 \
    || { cat "$logs/format.log" >&2; exit 1; }
}

up() {
  if pid=$(running_pid); then
    log "already running (pid $pid) on 127.0.0.1:$port"
    return 0
  fi
  if port_open; then
    log "port $port is taken by another process; set KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS"
    exit 1
  fi
  fetch
  format_storage
  write_config
  log "starting on 127.0.0.1:$port (heap $heap, log $logs/server.log)"
  : >"$logs/stdout.log"
  started_before=$(grep -c "Kafka Server started" "$logs/server.log" 2>/dev/null || true)
  (java_run kafka.Kafka "$config") >>"$logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_ready "${started_before:-0}"
}

# Ready once server.log has one more "Kafka Server started" line than before the start.
wait_ready() {
  local before=$1 deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
  until (($(grep -c "Kafka Server started" "$logs/server.log" 2>/dev/null || true) > before)) && port_open; do
    if ! running_pid >/dev/null; then
      log "broker exited during start-up; last lines of $logs/stdout.log and server.log:"
      tail -n 20 "$logs/stdout.log" "$logs/server.log" >&2 2>/dev/null || true
      rm -f "$pidfile"
      exit 1
    fi
    if ((SECONDS > deadline)); then
      log "not ready after ${KAFKA_START_TIMEOUT:-90}s; see $logs/server.log"
      exit 1
    fi
    sleep 0.3
  done
  log "ready on 127.0.0.1:$port"
}

down() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    log "not running"
    return 0
  fi
  log "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "did not stop in 30s; killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "stopped"
}

status() {
  if running_pid >/dev/null && port_open; then
    log "running on 127.0.0.1:$port"
  else
    log "not running on 127.0.0.1:$port"
    return 1
  fi
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 fetch|up|down|status" >&2; exit 2 ;;
esac
