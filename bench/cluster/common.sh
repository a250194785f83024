# shellcheck shell=bash
# shellcheck disable=SC2034  # ADMIN, node_pid: used by the scripts that source this
# Sourced by bench/cluster/*.sh: tokens, and a cluster on this machine (release build).
# start_cluster BASE NODES [COORDINATOR FLAGS...]: an embedded-catalog coordinator on port
# BASE0, nodes n1..nNODES on BASE1..., and a lone node (no cluster) on BASE9, each `--cores 1`,
# logs in $WORK; node_pid[i] is node i's process, and `port nI` its port. Every process is
# killed when the script exits.
BIN=${TESSERA_BIN:-target/release/tessera}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
printf 'a benchmark secret that is long enough!!\n' > "$WORK/secret"
token() { "$BIN" token --secret-file "$WORK/secret" "$@"; }
OPERATOR=$(token --role operator)
export TESSERA_CLUSTER_TOKEN; TESSERA_CLUSTER_TOKEN=$(token --role node)
ADMIN=$(token --tenant bench --role admin)
pids=()
declare -a node_pid
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

start_cluster() {
    BASE=$1
    local nodes=$2
    shift 2
    "$BIN" coordinator --listen "127.0.0.1:${BASE}0" --catalog-dir "$WORK/catalog" \
        --jwt-secret-file "$WORK/secret" --heartbeat-ms 200 "$@" > "$WORK/coordinator.log" 2>&1 &
    pids+=($!)
    sleep 1
    for i in $(seq "$nodes"); do
        "$BIN" serve --data "$WORK/n$i" --listen "127.0.0.1:$BASE$i" --http off --cores 1 \
            --jwt-secret-file "$WORK/secret" --coordinator "127.0.0.1:${BASE}0" --node-id "n$i" \
            --labels "host=n$i" > "$WORK/n$i.log" 2>&1 &
        pids+=($!)
        node_pid[i]=$!
    done
    "$BIN" serve --data "$WORK/lone" --listen "127.0.0.1:${BASE}9" --http off --cores 1 \
        --jwt-secret-file "$WORK/secret" > "$WORK/lone.log" 2>&1 &
    pids+=($!)
    sleep 3
}

port() { echo "$BASE${1#n}"; }

# The coordinators' status as JSON.
cluster_status() {
    "$BIN" admin cluster status --addr "127.0.0.1:${BASE}0" --token "$OPERATOR" --json
}
