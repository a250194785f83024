#!/usr/bin/env bash
# Replicated ingestion vs one node, in one run on this machine: starts an embedded-catalog
# coordinator, three nodes and a lone node (release build), creates the table on the cluster
# (RF 3, W 2), and runs bench/jobs/cluster-ingest.fio against the lone node, the table's
# leader and a follower (which forwards each batch to the leader), in turn, twice.
# All four nodes share this machine's cores and disk: every replicated batch is fsynced three
# times on the same disk, so the ratio is a floor for hosts of their own.
# Usage: bench/cluster/run.sh [WORKDIR]   (TESSERA_BIN, TESSERA_BENCH_SMALL/LARGE to override)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TESSERA_BIN:-target/release/tessera}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
printf 'a benchmark secret that is long enough!!\n' > "$WORK/secret"
token() { "$BIN" token --secret-file "$WORK/secret" "$@"; }
OPERATOR=$(token --role operator)
export TESSERA_CLUSTER_TOKEN; TESSERA_CLUSTER_TOKEN=$(token --role node)
ADMIN=$(token --tenant bench --role admin)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

"$BIN" coordinator --listen 127.0.0.1:7480 --catalog-dir "$WORK/catalog" \
    --jwt-secret-file "$WORK/secret" --heartbeat-ms 200 > "$WORK/coordinator.log" 2>&1 &
pids+=($!)
sleep 1
for i in 1 2 3; do
    "$BIN" serve --data "$WORK/n$i" --listen "127.0.0.1:748$i" --http off --cores 1 \
        --jwt-secret-file "$WORK/secret" --coordinator 127.0.0.1:7480 --node-id "n$i" \
        --labels "host=n$i" > "$WORK/n$i.log" 2>&1 &
    pids+=($!)
done
"$BIN" serve --data "$WORK/lone" --listen 127.0.0.1:7489 --http off --cores 1 \
    --jwt-secret-file "$WORK/secret" > "$WORK/lone.log" 2>&1 &
pids+=($!)
sleep 3

# The table, placed on all three (the bench creates it with the cluster's defaults: RF 3, W 2).
TESSERA_BENCH_TARGET=127.0.0.1:7481 TESSERA_TOKEN=$ADMIN TESSERA_BENCH_SMALL=1m \
    TESSERA_BENCH_LARGE=16m "$BIN" bench bench/jobs/cluster-ingest.fio > /dev/null
leader=$("$BIN" admin cluster status --addr 127.0.0.1:7480 --token "$OPERATOR" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["tables"][0]["leader"])')
follower=n1; [ "$leader" = n1 ] && follower=n2
echo "table placed; leader $leader, forwarding through $follower"
port() { echo "748${1#n}"; }

for round in 1 2; do
    for target in lone "leader:$leader" "follower:$follower"; do
        case $target in
            lone) address=127.0.0.1:7489 ;;
            *) address=127.0.0.1:$(port "${target#*:}") ;;
        esac
        echo "== round $round: $target ($address)"
        # A job with failed batches exits non-zero; its report (errors by code) still counts.
        TESSERA_BENCH_TARGET=$address TESSERA_TOKEN=$ADMIN "$BIN" bench bench/jobs/cluster-ingest.fio ||
            echo "(some batches failed: see the errors above)"
    done
done
