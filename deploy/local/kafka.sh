#!/usr/bin/env bash
# The local Apache Kafka cluster (KRaft): one node by default, or three replicated ones.
# Every node is a broker and a controller voter in one JVM.
#
#   kafka.sh fetch    resolve the broker's jars from Maven Central into the cache
#   kafka.sh up       format storage on first use, start, wait until ready (idempotent)
#   kafka.sh down     stop gracefully (idempotent); data stays on disk
#   kafka.sh status   exit 0 when every node answers
#   kafka.sh kill     SIGKILL the node(s) at once (for fault tests); data stays on disk
#
# Settings (environment):
#   KAFKA_HOME_DIR   where jars, data and logs live (default: <repo>/.local/kafka)
#   KAFKA_PORT       client port of node 1 on 127.0.0.1 (default 9092); node n listens on
#                    KAFKA_PORT + 2(n-1) and its controller on the port after its own
#   KAFKA_NODES      how many nodes: 1 (default) or 3. Three nodes replicate every internal
#                    topic three times with min.insync.replicas=2, and so do new topics
#   KAFKA_NODE       act on this node only (1..KAFKA_NODES): restart or kill one of three
#   KAFKA_HEAP       JVM heap per node (default 1g for one node, 512m each for three)
#   KAFKA_EXTRA_PROPERTIES  optional file appended to server.properties (later keys win),
#                    e.g. TLS or SASL listeners for tests
#   KAFKA_FORMAT_ARGS       optional extra arguments of the first storage format, e.g.
#                    --add-scram SCRAM-SHA-512=[name=...,password=...] (split on spaces, no quoting)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${KAFKA_HOME_DIR:-$repo/.local/kafka}
base_port=${KAFKA_PORT:-9092}
nodes=${KAFKA_NODES:-1}
case "$nodes" in
  1) default_heap=1g; replicas=1; min_isr=1 ;;
  3) default_heap=512m; replicas=3; min_isr=2 ;;
  *) echo "kafka: KAFKA_NODES must be 1 or 3, not '$nodes'" >&2; exit 2 ;;
esac
heap=${KAFKA_HEAP:-$default_heap}
only=${KAFKA_NODE:-}
if [[ -n $only ]] && ! ((only >= 1 && only <= nodes)); then
  echo "kafka: KAFKA_NODE must be between 1 and $nodes, not '$only'" >&2
  exit 2
fi
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs=$home/libs-$version

log() { echo "kafka: $*" >&2; }

# The node whose paths and ports the functions below use: select <n>.
select_node() {
  node=$1
  port=$((base_port + 2 * (node - 1)))
  controller_port=$((port + 1))
  data=$home/data-$port
  logs=$home/logs-$port
  pidfile=$home/broker-$port.pid
  config=$data/server.properties
  if ((nodes == 1)); then name="127.0.0.1:$port"; else name="node $node (127.0.0.1:$port)"; fi
}

# The nodes to act on: KAFKA_NODE, or every node.
targets() {
  if [[ -n $only ]]; then echo "$only"; else seq 1 "$nodes"; fi
}

voters() {
  local n list=""
  for n in $(seq 1 "$nodes"); do
    list+="${list:+,}$n@127.0.0.1:$((base_port + 2 * (n - 1) + 1))"
  done
  echo "$list"
}

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
node.id=$node
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/kraft
num.partitions=6
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
unclean.leader.election.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
  if [[ -n ${KAFKA_EXTRA_PROPERTIES:-} ]]; then
    cat "$KAFKA_EXTRA_PROPERTIES" >>"$config"
  fi
}

# One cluster id for every node of the cluster, kept beside the first node's data.
cluster_id() {
  local file=$home/cluster-$base_port-$nodes.id
  if [[ ! -s $file ]]; then
    mkdir -p "$home"
    (java_run kafka.tools.StorageTool random-uuid) >"$file"
  fi
  cat "$file"
}

format_storage() {
  [[ -f $data/kraft/meta.properties ]] && return 0
  write_config
  local id
  id=$(cluster_id)
  log "formatting storage of $name in $data (cluster $id)"
  local format_args=()
  read -r -a format_args <<<"${KAFKA_FORMAT_ARGS:-}"
  (java_run kafka.tools.StorageTool format -t "$id" -c "$config" \
    ${format_args[@]+"${format_args[@]}"}) >"$logs/format.log" 2>&1 \
    || { cat "$logs/format.log" >&2; exit 1; }
}

# Start the selected node without waiting; sets started_before to how many times its log
# says it started before (-1: it was already running).
start_node() {
  local pid
  if pid=$(running_pid); then
    log "$name already running (pid $pid)"
    started_before=-1
    return 0
  fi
  if port_open; then
    log "port $port is taken by another process; set KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS"
    exit 1
  fi
  format_storage
  write_config
  log "starting $name (heap $heap, log $logs/server.log)"
  : >"$logs/stdout.log"
  started_before=$(grep -c "Kafka Server started" "$logs/server.log" 2>/dev/null || true)
  (java_run kafka.Kafka "$config") >>"$logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

up() {
  fetch
  local n
  local -a before=()
  for n in $(targets); do
    select_node "$n"
    start_node
    before[n]=${started_before:-0}
  done
  for n in $(targets); do
    select_node "$n"
    if ((before[n] >= 0)); then wait_ready "${before[n]}"; fi
  done
}

# Ready once server.log has one more "Kafka Server started" line than before the start.
wait_ready() {
  local before=$1 deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
  until (($(grep -c "Kafka Server started" "$logs/server.log" 2>/dev/null || true) > before)) && port_open; do
    if ! running_pid >/dev/null; then
      log "$name exited during start-up; last lines of $logs/stdout.log and server.log:"
      tail -n 20 "$logs/stdout.log" "$logs/server.log" >&2 2>/dev/null || true
      rm -f "$pidfile"
      exit 1
    fi
    if ((SECONDS > deadline)); then
      log "$name not ready after ${KAFKA_START_TIMEOUT:-90}s; see $logs/server.log"
      exit 1
    fi
    sleep 0.3
  done
  log "ready on $name"
}

stop_node() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    log "$name not running"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop in 30s; killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "stopped $name"
}

down() {
  local n
  # The last voters first would leave the others without a quorum to stop cleanly: stop
  # them in parallel, as a cluster shuts down.
  for n in $(targets); do
    select_node "$n"
    stop_node &
  done
  wait
}

kill_nodes() {
  local n pid
  for n in $(targets); do
    select_node "$n"
    if pid=$(running_pid); then
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      log "killed $name (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

status() {
  local n bad=0
  for n in $(targets); do
    select_node "$n"
    if running_pid >/dev/null && port_open; then
      log "running: $name"
    else
      log "not running: $name"
      bad=1
    fi
  done
  return "$bad"
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  status) status ;;
  kill) kill_nodes ;;
  *) echo "usage: $0 fetch|up|down|status|kill" >&2; exit 2 ;;
esac
