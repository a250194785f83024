#!/usr/bin/env bash
# The spec's query mix (bench/jobs/query-mix.fio: 16 users, 20 s) against one `tessera serve`:
# alone, while `tessera ingest` streams 1 MB batches from 8 workers into other tables of the
# same tenant, and alone again. Needs a data directory holding tenant `bench`'s events table
# (run the mix once with TESSERA_BENCH_TARGET=embedded to generate it) and a directory of input
# files (e.g. `tessera gen events --rows 10000000 --out INPUT`).
#
#   TESSERA=target/release/tessera DATA=bench-data/mix-5m ROWS=5000000 INPUT=bench-data/input \
#     bash bench/peers/mix_under_ingest.sh
set -euo pipefail
: "${TESSERA:=target/release/tessera}" "${DATA:?}" "${INPUT:?}" "${ROWS:=5000000}"
JOBS="$(cd "$(dirname "$0")/.." && pwd)/jobs/query-mix.fio"
WORK=$(mktemp -d)
echo "a benchmark secret that is long enough" > "$WORK/secret"
"$TESSERA" serve --data "$DATA" --listen 127.0.0.1:7702 --http off \
    --jwt-secret-file "$WORK/secret" 2>"$WORK/serve.log" &
SERVER=$!
trap 'kill $SERVER; rm -rf "$WORK"' EXIT
sleep 2
READER=$("$TESSERA" token --secret-file "$WORK/secret" --tenant bench --role reader)
ADMIN=$("$TESSERA" token --secret-file "$WORK/secret" --tenant bench --role admin)
mix() {
    TESSERA_BENCH_TARGET=127.0.0.1:7702 TESSERA_TOKEN=$READER TESSERA_BENCH_RUNTIME=20 \
        TESSERA_BENCH_DATA=$DATA TESSERA_BENCH_ROWS=$ROWS \
        "$TESSERA" bench "$JOBS" 2>&1 | grep -E "ops:|lat percentiles|^  [a-z_]+ +ops="
}
echo "== alone"
mix
echo "== while ingesting"
(for i in 1 2 3 4 5 6 7 8; do
    "$TESSERA" ingest --addr 127.0.0.1:7702 --token "$ADMIN" --table "ingested$(date +%s%N)" \
        --workers 8 --batch-mb 1 "$INPUT" | grep -E "MB/s|ack latency"
done) >"$WORK/ingest.log" 2>&1 &
INGEST=$!
sleep 1
mix
wait $INGEST || true
cat "$WORK/ingest.log"
echo "== alone again"
mix
