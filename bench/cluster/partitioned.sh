#!/usr/bin/env bash
# Queries on a partitioned table vs one node, in one run on this machine: starts an
# embedded-catalog coordinator, three nodes and a lone node (release build, each `--cores 1`),
# imports generated events into the lone node and ingests the same events into a table split
# into three hash partitions by `id`, one replica each (RF 1), so every node holds one
# partition and leads it; waits for the partitions to flush their buffered rows to files, then
# runs bench/jobs/cluster-query.fio against the lone node and against n1 (which sends each query
# to the three partitions as fragments and merges their partial results; a point lookup on `id`
# reads one partition), in turn, twice.
# Usage: bench/cluster/partitioned.sh [WORKDIR]   (TESSERA_BIN, TESSERA_BENCH_ROWS, _RUNTIME)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${TESSERA_BENCH_ROWS:-4000000}
export TESSERA_BENCH_ROWS=$ROWS
# shellcheck source=bench/cluster/common.sh
source bench/cluster/common.sh
start_cluster 769 3

"$BIN" gen events --rows "$ROWS" --seed 42 --out "$WORK/events.parquet" > /dev/null
"$BIN" import --addr 127.0.0.1:7699 --token "$ADMIN" --table events "$WORK/events.parquet" \
    > /dev/null
"$BIN" ingest --addr 127.0.0.1:7691 --token "$ADMIN" --table events --workers 4 \
    --batch-mb 16 --partitions 3 --partition-key id --replication-factor 1 --write-quorum 1 \
    "$WORK/events.parquet" | tail -1
cluster_status | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tables"]:
    print("%s on %s" % (t["table"], ", ".join(r["node_id"] for r in t["replicas"])))
'
# Buffered rows reach files after the flush age (30 s).
sleep 35

for round in 1 2; do
    for target in lone partitioned:n1; do
        case $target in
            lone) address=127.0.0.1:7699 ;;
            *) address=127.0.0.1:$(port "${target#*:}") ;;
        esac
        echo "== round $round: $target ($address)"
        TESSERA_BENCH_TARGET=$address TESSERA_TOKEN=$ADMIN "$BIN" bench bench/jobs/cluster-query.fio
    done
    # The same 16 users spread over the three nodes (6, 5 and 5), as clients that connect to
    # any node are: each node plans and merges its own users' queries.
    echo "== round $round: partitioned, users spread over n1, n2, n3"
    benches=()
    for node in n1 n2 n3; do
        users=5; [ "$node" = n1 ] && users=6
        TESSERA_BENCH_TARGET=127.0.0.1:$(port $node) TESSERA_TOKEN=$ADMIN \
            TESSERA_BENCH_USERS=$users "$BIN" bench --section query-mix --no-progress \
            --output-format json --output "$WORK/spread-$node.json" \
            bench/jobs/cluster-query.fio &
        benches+=($!)
    done
    wait "${benches[@]}"
    python3 - "$WORK"/spread-n1.json "$WORK"/spread-n2.json "$WORK"/spread-n3.json <<'PY'
import json, sys
total = 0.0
for path in sys.argv[1:]:
    report = json.load(open(path))
    job = report["jobs"][0]
    total += job["ops_per_s"]
    lat = job["lat_us"]["percentiles"]
    print("%s: %s users, %.0f ops/s, %d errors, p50 %.2f ms, p95 %.2f ms" % (
        path.rsplit("-", 1)[1][:-5], job["settings"].get("users", "?"), job["ops_per_s"],
        job["errors"], lat["50"] / 1000, lat["95"] / 1000))
print("spread over three nodes: %.0f ops/s in all" % total)
PY
done
