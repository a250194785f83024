#!/usr/bin/env bash
# Bulk imports into a replicated table vs one node, in one run on this machine: starts an
# embedded-catalog coordinator, three nodes and a lone node (release build, each `--cores 1`),
# generates events, then imports the same file, in turn, twice each:
#   lone         into the lone node;
#   replicated   into a table on the three nodes (RF 3, W 2) through n1: the table's leader
#                writes the files, sends them to both followers, which check and stage them,
#                and all three publish (n1 forwards the stream when it does not lead);
#   partitioned  into a table of three hash partitions by `id` (RF 1) through n1, which splits
#                the stream and imports each part on its partition's node.
# All four nodes share this machine's cores and disk: every replicated file is written three
# times to the same disk, so the ratios are floors for hosts of their own.
# Usage: bench/cluster/import.sh [WORKDIR]   (TESSERA_BIN, TESSERA_BENCH_ROWS)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${TESSERA_BENCH_ROWS:-4000000}
# shellcheck source=bench/cluster/common.sh
source bench/cluster/common.sh
start_cluster 758 3

"$BIN" gen events --rows "$ROWS" --seed 42 --out "$WORK/events.parquet" > /dev/null
BYTES=$(stat -c %s "$WORK/events.parquet")
echo "input: $ROWS events, $((BYTES >> 20)) MiB of Parquet"

# import NAME ADDRESS TABLE [FLAGS...]: one timed `tessera import`, its MiB/s of input.
import() {
    local name=$1 address=$2 table=$3
    shift 3
    local started ended
    started=$(date +%s.%N)
    "$BIN" import --addr "$address" --token "$ADMIN" --table "$table" "$@" \
        "$WORK/events.parquet" 2> "$WORK/import-$table.log"
    ended=$(date +%s.%N)
    python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); \
print('%-12s %6.2f s  %6.1f MiB/s  %s' % (sys.argv[3], s, int(sys.argv[4]) / s / 2**20, \
open(sys.argv[5]).read().strip().splitlines()[-1]))" \
        "$started" "$ended" "$name" "$BYTES" "$WORK/import-$table.log"
}

for round in 1 2; do
    echo "== round $round"
    import lone 127.0.0.1:7589 "lone_$round"
    import replicated 127.0.0.1:7581 "replicated_$round"
    import partitioned 127.0.0.1:7581 "partitioned_$round" --partitions 3 --partition-key id \
        --replication-factor 1 --write-quorum 1
done
cluster_status | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tables"]:
    print("%s: leader %s, on %s" % (t["table"], t["leader"],
        ", ".join(r["node_id"] for r in t["replicas"])))
'
# Every replica answers the same.
for i in 1 2 3; do
    printf 'n%s: ' "$i"
    "$BIN" sql --addr "127.0.0.1:$(port "n$i")" --token "$ADMIN" --format csv \
        "SELECT COUNT(*), SUM(id) FROM replicated_2" | tail -1
done
