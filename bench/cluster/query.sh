#!/usr/bin/env bash
# Queries on a replicated table vs one node, in one run on this machine: starts an
# embedded-catalog coordinator, four nodes and a lone node (release build), loads the same
# generated events into the lone node (import) and into a table the cluster places on three of
# the four nodes (ingest: RF 3, W 2), waits for every replica to flush its buffered rows to
# files, then runs bench/jobs/cluster-query.fio against the lone node, a replica (it reads its
# own copy) and the fourth node (it runs each query on a replica and streams the result on),
# in turn, twice. The replica-vs-fourth-node difference is what distribution adds to a query;
# the lone node's table is imported (a few large files), the cluster's ingested (files of one
# flush each), so lone-vs-replica also compares two layouts of the same rows. Last,
# re-replication under load: the query mix runs against the leader while a follower is killed;
# once it is down past the grace period (3 s here) the coordinator moves its replica to the
# fourth node and the leader copies the table there (its log gives bytes and seconds).
# Usage: bench/cluster/query.sh [WORKDIR]   (TESSERA_BIN, TESSERA_BENCH_ROWS, _RUNTIME)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${TESSERA_BENCH_ROWS:-4000000}
export TESSERA_BENCH_ROWS=$ROWS
# shellcheck source=bench/cluster/common.sh
source bench/cluster/common.sh
start_cluster 759 4 --node-timeout-ms 2000 --rereplicate-after-ms 3000

"$BIN" gen events --rows "$ROWS" --seed 42 --out "$WORK/events.parquet" > /dev/null
"$BIN" import --addr 127.0.0.1:7599 --token "$ADMIN" --table events "$WORK/events.parquet" \
    > /dev/null
"$BIN" ingest --addr 127.0.0.1:7591 --token "$ADMIN" --table events --workers 4 \
    --batch-mb 16 "$WORK/events.parquet" | tail -1
status=$(cluster_status)
read -r leader outsider follower < <(python3 -c '
import json, sys
status = json.loads(sys.argv[1])
table = status["tables"][0]
held = [r["node_id"] for r in table["replicas"]]
print(table["leader"], [n["node_id"] for n in status["nodes"] if n["node_id"] not in held][0],
      [n for n in held if n != table["leader"]][0])
' "$status")
echo "events on three nodes, led by $leader; $outsider holds no replica"
# Buffered rows reach files after the flush age (30 s) on every replica.
sleep 35

for round in 1 2; do
    for target in lone "replica:$leader" "no-replica:$outsider"; do
        case $target in
            lone) address=127.0.0.1:7599 ;;
            *) address=127.0.0.1:$(port "${target#*:}") ;;
        esac
        echo "== round $round: $target ($address)"
        TESSERA_BENCH_TARGET=$address TESSERA_TOKEN=$ADMIN "$BIN" bench bench/jobs/cluster-query.fio
    done
done

echo "== re-replication: query mix against $leader; $follower killed after 3 s"
TESSERA_BENCH_TARGET=127.0.0.1:$(port "$leader") TESSERA_TOKEN=$ADMIN "$BIN" bench \
    bench/jobs/cluster-query.fio --section query-mix > "$WORK/rereplication.txt" &
bench=$!
sleep 3
kill -9 "${node_pid[${follower#n}]}"
wait "$bench"
cat "$WORK/rereplication.txt"
for _ in $(seq 60); do
    grep -q "a follower caught up" "$WORK/$leader.log" && break
    sleep 1
done
grep "a follower caught up" "$WORK/$leader.log" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    mib, seconds = e["bytes"] / 2**20, e["seconds"]
    print("copied to %s: %d files, %.1f MiB in %.2f s = %.1f MiB/s"
          % (e["node"], e["files"], mib, seconds, mib / seconds))
'
