#!/usr/bin/env bash
# Checks the deployment files and the Debian package (CI runs this; root or a normal user):
#   (d) the maintainer scripts parse (sh -n) and, when shellcheck is installed, pass it;
#   (b) 60-tessera.conf is valid `sysctl -p` syntax and names keys this kernel has;
#   (c) the package builds from a given binary, lands where the unit expects, and its
#       tessera.toml parses with that binary (--check-config, when the binary has it);
#   (a) `systemd-analyze verify` accepts the unit as installed by the package.
#
#   tools/deploy/check.sh [--bin PATH]    (default PATH: ${CARGO_TARGET_DIR:-target}/debug/tessera)
#
# Exits non-zero, naming every failure, if anything is wrong.
set -euo pipefail

deploy=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$deploy/../.." && pwd)
sysctl_src="$deploy/sysctl/60-tessera.conf"

bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) [ $# -ge 2 ] || { echo "check.sh: --bin needs a path" >&2; exit 2; }; bin=$2; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown argument $1 (usage: check.sh [--bin PATH])" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    target_dir=${CARGO_TARGET_DIR:-target}
    case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
    bin="$target_dir/debug/tessera"
fi
if [ ! -x "$bin" ]; then
    echo "check.sh: no tessera binary at $bin (build one, then pass --bin PATH)" >&2
    exit 2
fi

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
ok() { echo "ok: $*"; }
warn() { echo "warning: $*" >&2; }

for tool in dpkg-deb dpkg systemd-analyze; do
    if ! command -v "$tool" >/dev/null; then
        echo "check.sh: $tool not found (Debian: apt-get install dpkg systemd)" >&2
        exit 1
    fi
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/tessera-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# A key's value in a unit file (the last assignment wins, as in systemd).
unit_value() {
    sed -n "s/^$1=//p" "$2" | tail -n 1
}
# A top-level or table key's value in tessera.toml, quotes removed (uncommented lines only).
toml_values() {
    sed -n "s/^$1 *= *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$2"
}
# A shell variable assigned at the start of a line in a maintainer script.
script_value() {
    sed -n "s/^$1=//p" "$2" | head -n 1
}
# systemd time span (90s, 5min, 1min 30s, or plain seconds) in seconds.
span_seconds() {
    local total=0 part number unit
    for part in $1; do
        number=${part%%[a-z]*}
        unit=${part#"$number"}
        case "$unit" in
            "" | s | sec) total=$((total + number)) ;;
            min | m) total=$((total + number * 60)) ;;
            h) total=$((total + number * 3600)) ;;
            *) echo "-1"; return ;;
        esac
    done
    echo "$total"
}

echo "== (d) maintainer scripts"
for script in postinst prerm postrm; do
    path="$deploy/debian/$script"
    if [ "$(head -n 1 "$path")" != "#!/bin/sh" ]; then
        fail "$script does not start with #!/bin/sh"
    fi
    if sh -n "$path"; then ok "sh -n $script"; else fail "sh -n $script"; fi
done
for script in build-deb.sh check.sh; do
    if bash -n "$deploy/$script"; then ok "bash -n $script"; else fail "bash -n $script"; fi
done
if command -v shellcheck >/dev/null; then
    if shellcheck "$deploy/debian/postinst" "$deploy/debian/prerm" "$deploy/debian/postrm" \
        "$deploy/build-deb.sh" "$deploy/check.sh"; then
        ok "shellcheck"
    else
        fail "shellcheck"
    fi
else
    echo "skipped: shellcheck not installed"
fi

echo "== (b) sysctl drop-in"
# `sysctl -p` syntax: blank lines, comments starting with # or ;, and `key = value`. Every value
# here is numeric (some are several numbers); a key must appear once. A key this kernel does not
# have is a warning: sysctl --system reports it but the rest applies.
declare -A seen=()
line_number=0
while IFS= read -r line || [ -n "$line" ]; do
    line_number=$((line_number + 1))
    case "$line" in
        "" | "#"* | ";"*) continue ;;
    esac
    if [[ ! "$line" =~ ^([a-z0-9_]+(\.[a-z0-9_-]+)+)\ =\ ([0-9]+([\ ][0-9]+)*)$ ]]; then
        fail "60-tessera.conf:$line_number: not 'key = number[ number...]': $line"
        continue
    fi
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[3]}
    if [ -n "${seen[$key]:-}" ]; then
        fail "60-tessera.conf:$line_number: $key set twice"
    fi
    seen[$key]=$value
    proc="/proc/sys/${key//.//}"
    if [ ! -e "$proc" ]; then
        warn "60-tessera.conf:$line_number: this kernel has no $key"
        continue
    fi
    current=$(cat "$proc" 2>/dev/null || true)
    read -r -a want <<<"$value"
    read -r -a have <<<"$current"
    if [ -n "$current" ] && [ "${#want[@]}" -ne "${#have[@]}" ]; then
        fail "60-tessera.conf:$line_number: $key takes ${#have[@]} number(s) (now: $current), got $value"
    fi
done <"$sysctl_src"
ok "60-tessera.conf: ${#seen[@]} keys parsed"

echo "== (c) package"
deb=$(bash "$deploy/build-deb.sh" --bin "$bin" --out "$scratch/out" --fast 2>"$scratch/build.log") || {
    cat "$scratch/build.log" >&2
    echo "FAIL: build-deb.sh failed" >&2
    exit 1
}
ok "built $(basename "$deb")"
dpkg-deb --info "$deb" >"$scratch/info"
dpkg-deb --contents "$deb" >"$scratch/contents"
for field in Package Version Architecture Maintainer Depends Description; do
    grep -q "^ $field: ." "$scratch/info" || fail "control has no $field"
done
root="$scratch/root"
dpkg -x "$deb" "$root"
for path in usr/bin/tessera lib/systemd/system/tessera.service \
    lib/systemd/system/tessera-coordinator.service usr/lib/sysctl.d/60-tessera.conf \
    usr/lib/sysusers.d/tessera.conf etc/tessera/tessera.toml usr/share/doc/tessera/copyright; do
    grep -q " \./$path\$" "$scratch/contents" || fail "package lacks /$path"
done
for dir in prometheus grafana; do
    if [ -d "$deploy/$dir" ] && [ ! -d "$root/usr/share/tessera/$dir" ]; then
        fail "package lacks /usr/share/tessera/$dir"
    fi
done
dpkg-deb --ctrl-tarfile "$deb" | tar -tf - >"$scratch/control-files"
for file in control conffiles postinst prerm postrm; do
    grep -q "^\./$file\$" "$scratch/control-files" || fail "control archive lacks $file"
done
while IFS= read -r conffile; do
    [ -f "$root$conffile" ] || fail "conffile $conffile is not in the package"
done < <(dpkg-deb --info "$deb" conffiles)

unit="$root/lib/systemd/system/tessera.service"
config="$root/etc/tessera/tessera.toml"
postinst="$deploy/debian/postinst"

# ExecStart: the binary and the --config file.
read -r -a exec_start <<<"$(unit_value ExecStart "$unit")"
exec_bin=${exec_start[0]:-}
if [ -n "$exec_bin" ] && [ -x "$root$exec_bin" ] && [ -f "$root$exec_bin" ]; then
    ok "ExecStart binary $exec_bin is in the package"
else
    fail "ExecStart binary '$exec_bin' is not an executable in the package"
fi
[ "${exec_start[1]:-}" = serve ] || fail "ExecStart does not run 'tessera serve'"
unit_config=""
for ((i = 1; i < ${#exec_start[@]}; i++)); do
    if [ "${exec_start[$i]}" = --config ]; then unit_config=${exec_start[$((i + 1))]:-}; fi
done
if [ -n "$unit_config" ] && [ -f "$root$unit_config" ]; then
    ok "ExecStart --config $unit_config is in the package"
else
    fail "ExecStart --config '$unit_config' is not in the package"
fi
grep -qx "$unit_config" "$deploy/debian/conffiles" || fail "$unit_config is not a conffile"

# The token secrets the config names: postinst creates the package's one, in /etc/tessera.
secret=$(script_value SECRET "$postinst")
mapfile -t key_files < <(toml_values file "$config")
[ "${#key_files[@]}" -gt 0 ] || fail "tessera.toml names no [[auth.keys]] file"
for key_file in "${key_files[@]}"; do
    if [ "$key_file" = "$secret" ]; then
        ok "auth key file $key_file is created by postinst"
    else
        fail "tessera.toml names key file $key_file; postinst creates $secret"
    fi
done

# The data directory: one path in the unit (StateDirectory, ReadWritePaths), the config, postinst
# and sysusers, and its parent present on any system (/var/lib).
state_dir="/var/lib/$(unit_value StateDirectory "$unit")"
rw_path=$(unit_value ReadWritePaths "$unit")
data_path=$(toml_values data_path "$config")
data_dir=$(script_value DATA_DIR "$postinst")
sysusers_home=$(awk '$1 == "u" { print $(NF - 1) }' "$root/usr/lib/sysusers.d/tessera.conf")
if [ "$state_dir" = "$rw_path" ] && [ "$rw_path" = "$data_path" ] && [ "$data_path" = "$data_dir" ] \
    && [ "$data_dir" = "$sysusers_home" ] && [ "$(dirname "$rw_path")" = /var/lib ]; then
    ok "data directory $rw_path agrees (StateDirectory, ReadWritePaths, data_path, postinst, sysusers)"
else
    fail "data directory disagrees: StateDirectory $state_dir, ReadWritePaths $rw_path," \
        "data_path $data_path, postinst $data_dir, sysusers home $sysusers_home"
fi

# The user: unit, postinst, sysusers.
unit_user=$(unit_value User "$unit")
unit_group=$(unit_value Group "$unit")
script_user=$(script_value USER_NAME "$postinst")
sysusers_user=$(awk '$1 == "u" { print $2 }' "$root/usr/lib/sysusers.d/tessera.conf")
if [ "$unit_user" = "$script_user" ] && [ "$unit_group" = "$script_user" ] && [ "$sysusers_user" = "$script_user" ]; then
    ok "user and group $unit_user agree (unit, postinst, sysusers)"
else
    fail "user disagrees: unit $unit_user:$unit_group, postinst $script_user, sysusers $sysusers_user"
fi

# Limits the unit sets need the kernel and the config to agree.
nofile=$(unit_value LimitNOFILE "$unit")
nr_open=${seen[fs.nr_open]:-0}
if [ "$nofile" -le "$nr_open" ]; then
    ok "LimitNOFILE=$nofile <= fs.nr_open $nr_open"
else
    fail "LimitNOFILE=$nofile exceeds the drop-in's fs.nr_open ($nr_open): the unit would fail to start"
fi
stop=$(span_seconds "$(unit_value TimeoutStopSec "$unit")")
drain=$(toml_values drain_timeout_seconds "$config")
if [ -n "$drain" ] && [ "$stop" -gt $((drain + 30)) ]; then
    ok "TimeoutStopSec ${stop}s leaves a flush margin over drain_timeout_seconds ${drain}s"
else
    fail "TimeoutStopSec (${stop}s) must exceed drain_timeout_seconds (${drain:-unset}) by more than 30s"
fi
[ "$(unit_value Type "$unit")" = notify ] || fail "unit is not Type=notify"
[ -n "$(unit_value WatchdogSec "$unit")" ] || fail "unit has no WatchdogSec"
if grep -q '^SystemCallFilter=' "$unit"; then
    fail "unit has a SystemCallFilter (io_uring syscalls are not in @system-service everywhere)"
fi

# The packaged config parses with the packaged binary. Its absolute paths point into the
# scratch root (rewritten in the scratch copy only), with a secret made as postinst makes it.
if "$root/usr/bin/tessera" serve --help 2>/dev/null | grep -q -- --check-config; then
    od -An -tx1 -N48 /dev/urandom | tr -d ' \n' >"$root$secret"
    mkdir -p "$root$data_path"
    sed -i -e "s|\"/etc/tessera/|\"$root/etc/tessera/|g" -e "s|\"$data_path\"|\"$root$data_path\"|" "$config"
    if "$root/usr/bin/tessera" serve --config "$config" --check-config >"$scratch/check-config.log" 2>&1; then
        ok "tessera serve --check-config accepts the packaged tessera.toml"
    else
        cat "$scratch/check-config.log" >&2
        fail "tessera serve --check-config rejects the packaged tessera.toml"
    fi
else
    echo "skipped: --check-config not in this binary"
fi

echo "== (a) systemd-analyze verify"
# verify --root resolves everything inside the scratch root: the unit search path, the
# executables of Exec*= lines, and the units named in Wants=/After=/WantedBy=. So the root gets
#  - the package's files (dpkg -x above; the unit in /lib/systemd/system, on Debian's path),
#  - this host's system units, for the dependencies (multi-user.target, network-online.target,
#    sysinit.target that every service needs): without them verify fails with
#    "Unit sysinit.target not found", which is about the scratch root, not our unit;
#  - /bin/kill (ExecReload), which the package's Depends: procps provides on a real system;
#  - passwd/group entries as postinst makes them (systemd 252 does not resolve User= in verify;
#    newer versions may).
host_units=""
for dir in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -f "$dir/multi-user.target" ]; then host_units=$dir; break; fi
done
if [ -z "$host_units" ]; then
    echo "check.sh: no systemd units on this host (apt-get install systemd)" >&2
    exit 1
fi
# verify (252) does not load [Install], so check WantedBy= targets exist here.
for wanted in $(unit_value WantedBy "$unit"); do
    [ -e "$host_units/$wanted" ] || fail "WantedBy=$wanted: no such unit on this host"
done
mkdir -p "$root/usr/lib/systemd/system" "$root/bin" "$root/etc"
find "$host_units" -mindepth 1 -maxdepth 1 ! -name 'tessera*.service' -exec cp -a {} "$root/usr/lib/systemd/system/" \;
kill_bin=$(unit_value ExecReload "$unit" | awk '{ print $1 }')
if [ ! -x "$kill_bin" ]; then
    fail "ExecReload's $kill_bin does not exist on this host either"
else
    cp "$kill_bin" "$root$kill_bin"
fi
echo "$unit_user:x:999:999::$data_path:/usr/sbin/nologin" >"$root/etc/passwd"
echo "$unit_group:x:999:" >"$root/etc/group"
# verify exits 0 on most unit file mistakes (unknown keys, unparsable values are warnings that
# systemd ignores the line for), so any output is a failure; it exits non-zero for a missing
# executable or dependency. Nothing it prints in this setup is environmental.
status=0
systemd-analyze verify --root="$root" tessera.service tessera-coordinator.service \
    >"$scratch/verify.log" 2>&1 || status=$?
if [ "$status" -eq 0 ] && [ ! -s "$scratch/verify.log" ]; then
    ok "systemd-analyze verify: no errors, no warnings ($(systemd-analyze --version | head -n 1))"
else
    sed "s|$root||g" "$scratch/verify.log" >&2
    fail "systemd-analyze verify (exit $status)"
fi

if [ "$failures" -gt 0 ]; then
    echo "check.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "check.sh: all deployment checks passed"
