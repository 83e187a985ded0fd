#!/usr/bin/env bash
# Provision Apache Kafka (broker, CLI tools, Java client) from Maven with `mvn`, idempotently.
#
#   bash scripts/kafka-dist.sh          # installs once, then only prints the bin dir
#
# Layout (under ${FJORD_CACHE_DIR:-~/.cache/fjord}/kafka/<version>/):
#   libs/      every runtime jar (kafka_2.13, kafka-tools, kafka-clients, kafka-server, ... + log4j2)
#   config/    log4j2 configs: tools-log4j2.properties (WARN to stderr), server-log4j2.properties (INFO)
#   bin/       wrappers named like upstream's bin/*.sh without the suffix (kafka-topics, ...)
#   .installed marker holding the hash of the pom and this script; when it matches, nothing is done.
#
# Wrappers honour the upstream environment variables KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_LOG4J_OPTS and KAFKA_OPTS. The last line printed on stdout is the bin dir.
set -euo pipefail

KAFKA_VERSION=4.3.1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/kafka-dist/pom.xml"
CACHE="${FJORD_CACHE_DIR:-${FJORD_CACHE:-$HOME/.cache/fjord}}"
DEST="$CACHE/kafka/$KAFKA_VERSION"
MARKER="$DEST/.installed"

stamp() { cat "$POM" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1; }

installed() { [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(stamp)" ]]; }

if installed; then
  echo "$DEST/bin"
  exit 0
fi

# One installer at a time: tests call this script in parallel, and on a cold cache a second
# installer would `rm -rf` the tree the first had just published. Whoever waited finds it done.
mkdir -p "$CACHE/kafka"
exec 9>"$CACHE/kafka/.install.lock"
flock 9
if installed; then
  echo "$DEST/bin"
  exit 0
fi

command -v java >/dev/null || { echo "kafka-dist: java not found (need Java 17+)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka-dist: mvn not found (apt-get install maven)" >&2; exit 1; }

STAGE="$(mktemp -d "$CACHE/kafka/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

echo "kafka-dist: resolving Apache Kafka $KAFKA_VERSION jars with mvn ..." >&2
# Use a private copy of the pom so nothing is written next to the committed one (target/ etc.).
cp "$POM" "$STAGE/pom.xml"
mvn -B -q -Dstyle.color=never -f "$STAGE/pom.xml" \
  -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$STAGE/libs" >&2
rm -f "$STAGE/pom.xml"
rm -rf "$STAGE/target"

# Sanity: the jars that carry the main classes must be there.
for j in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar"; do
  [[ -f "$STAGE/libs/$j" ]] || { echo "kafka-dist: $j missing after mvn" >&2; exit 1; }
done

mkdir -p "$STAGE/config" "$STAGE/bin"
cat > "$STAGE/config/tools-log4j2.properties" <<'EOF'
# Quiet log4j2 config for the CLI tools: warnings and errors only, on stderr.
status = error
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
EOF
cat > "$STAGE/config/server-log4j2.properties" <<'EOF'
# Broker log4j2 config: INFO to stdout (the caller redirects it to a file); noisy loggers at WARN.
status = error
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = warn
logger.kafkaconfig.name = org.apache.kafka.common.config.AbstractConfig
logger.kafkaconfig.level = warn
EOF

# name  main-class  kind (admin = short-lived CLI, tuned for fast start; perf = throughput tool;
# server = the broker)
WRAPPERS=(
  "kafka-topics                  org.apache.kafka.tools.TopicCommand                              admin"
  "kafka-console-producer        org.apache.kafka.tools.ConsoleProducer                           admin"
  "kafka-console-consumer        org.apache.kafka.tools.consumer.ConsoleConsumer                  admin"
  "kafka-consumer-groups         org.apache.kafka.tools.consumer.group.ConsumerGroupCommand       admin"
  "kafka-configs                 kafka.admin.ConfigCommand                                        admin"
  "kafka-broker-api-versions     org.apache.kafka.tools.BrokerApiVersionsCommand                  admin"
  "kafka-get-offsets             org.apache.kafka.tools.GetOffsetShell                            admin"
  "kafka-acls                    org.apache.kafka.tools.AclCommand                                admin"
  "kafka-reassign-partitions     org.apache.kafka.tools.reassign.ReassignPartitionsCommand        admin"
  "kafka-leader-election         org.apache.kafka.tools.LeaderElectionCommand                     admin"
  "kafka-metadata-quorum         org.apache.kafka.tools.MetadataQuorumCommand                     admin"
  "kafka-log-dirs                org.apache.kafka.tools.LogDirsCommand                            admin"
  "kafka-transactions            org.apache.kafka.tools.TransactionsCommand                       admin"
  "kafka-storage                 kafka.tools.StorageTool                                          admin"
  "kafka-producer-perf-test      org.apache.kafka.tools.ProducerPerformance                       perf"
  "kafka-consumer-perf-test      org.apache.kafka.tools.ConsumerPerformance                       perf"
  "kafka-verifiable-producer     org.apache.kafka.tools.VerifiableProducer                        perf"
  "kafka-verifiable-consumer     org.apache.kafka.tools.VerifiableConsumer                        perf"
  "kafka-streams-wordcount       org.apache.kafka.streams.examples.wordcount.WordCountDemo         perf"
  "connect-distributed           org.apache.kafka.connect.cli.ConnectDistributed                  server"
  "kafka-server-start            kafka.Kafka                                                      server"
)

# Check every main class exists in some jar before writing wrappers (catches class moves on bumps).
CLASSLIST="$(for j in "$STAGE"/libs/*.jar; do unzip -Z1 "$j" 2>/dev/null || true; done)"
for w in "${WRAPPERS[@]}"; do
  read -r name cls kind <<<"$w"
  if ! grep -qx "${cls//.//}.class" <<<"$CLASSLIST"; then
    echo "kafka-dist: main class $cls for $name not found in the jars" >&2
    exit 1
  fi
  case "$kind" in
    admin)  heap="-Xmx256m"; jvm="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \${CDS}"; log="tools" ;;
    perf)   heap="-Xmx512m"; jvm="-XX:+UseG1GC -XX:MaxGCPauseMillis=20"; log="tools" ;;
    server) heap="-Xmx512m -Xms512m"; jvm="-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent"; log="server" ;;
  esac
  cat > "$STAGE/bin/$name" <<EOF
#!/usr/bin/env bash
# Generated by scripts/kafka-dist.sh: Apache Kafka $KAFKA_VERSION \`$name\` ($cls).
HOME_DIR="\$(cd "\$(dirname "\${BASH_SOURCE[0]}")/.." && pwd)"
CDS=""
[[ -f "\$HOME_DIR/cds/admin-tools.jsa" ]] && CDS="-XX:SharedArchiveFile=\$HOME_DIR/cds/admin-tools.jsa"
# JVM (unified logging) warnings go to stderr so they never mix with a tool's stdout.
exec java -Xlog:disable -Xlog:all=warning:stderr \${KAFKA_HEAP_OPTS:-$heap} \${KAFKA_JVM_PERFORMANCE_OPTS:-$jvm} \\
  -Djava.awt.headless=true \\
  \${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=\$HOME_DIR/config/$log-log4j2.properties} \\
  \${KAFKA_OPTS:-} \\
  -cp "\$HOME_DIR/libs/*" $cls "\$@"
EOF
  chmod +x "$STAGE/bin/$name"
done

# Smoke test one wrapper from the staged tree before publishing it.
if ! "$STAGE/bin/kafka-topics" --version >/dev/null 2>"$STAGE/smoke.err"; then
  echo "kafka-dist: smoke test 'kafka-topics --version' failed:" >&2
  cat "$STAGE/smoke.err" >&2
  exit 1
fi
rm -f "$STAGE/smoke.err"

# Publish: replace any previous (partial or outdated) install.
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT

# Class-data-sharing archive for the short-lived admin tools (halves their start-up time and CPU).
# It records the jar paths, so it is made here, from the final location: one run of kafka-topics
# against a closed port loads the admin client's classes and fails fast. Optional: wrappers use it
# only if it exists, and the JVM ignores it (silently, -Xshare:auto) if the jars ever change.
mkdir -p "$DEST/cds"
CLOSED_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf 'request.timeout.ms=500\ndefault.api.timeout.ms=1000\nreconnect.backoff.max.ms=100\n' > "$DEST/cds/probe.properties"
KAFKA_JVM_PERFORMANCE_OPTS="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit=$DEST/cds/admin-tools.jsa" \
  timeout 60 "$DEST/bin/kafka-topics" --bootstrap-server "127.0.0.1:$CLOSED_PORT" --list \
  --command-config "$DEST/cds/probe.properties" >/dev/null 2>&1 || true
rm -f "$DEST/cds/probe.properties"
[[ -f "$DEST/cds/admin-tools.jsa" ]] || echo "kafka-dist: note: no CDS archive made; admin tools start slower" >&2

stamp > "$MARKER"
echo "kafka-dist: installed Apache Kafka $KAFKA_VERSION into $DEST" >&2
echo "$DEST/bin"
