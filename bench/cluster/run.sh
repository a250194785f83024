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
# shellcheck source=bench/cluster/common.sh
source bench/cluster/common.sh
start_cluster 748 3

# The table, placed on all three (the bench creates it with the cluster's defaults: RF 3, W 2).
TESSERA_BENCH_TARGET=127.0.0.1:7481 TESSERA_TOKEN=$ADMIN TESSERA_BENCH_SMALL=1m \
    TESSERA_BENCH_LARGE=16m "$BIN" bench bench/jobs/cluster-ingest.fio > /dev/null
leader=$(cluster_status |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["tables"][0]["leader"])')
follower=n1; [ "$leader" = n1 ] && follower=n2
echo "table placed; leader $leader, forwarding through $follower"

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
