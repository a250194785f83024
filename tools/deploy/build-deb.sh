#!/usr/bin/env bash
# Builds the tessera Debian package with plain dpkg-deb (no cargo-deb).
#
#   tools/deploy/build-deb.sh [--bin PATH] [--out DIR] [--fast]
#
#   --bin PATH  package this tessera binary instead of building one
#               (default: cargo build --release -p tessera-tools, then
#               ${CARGO_TARGET_DIR:-target}/release/tessera)
#   --out DIR   where the .deb goes (default: ${CARGO_TARGET_DIR:-target}/deb)
#   --fast      gzip -1 instead of dpkg-deb's default xz (a debug binary: 1 s instead of 20 s);
#               for tests, not for packages you ship
#
# Prints the path of the .deb on stdout (everything else goes to stderr).
set -euo pipefail

usage() {
    sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

deploy=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$deploy/../.." && pwd)
bin=""
out=""
compression=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) [ $# -ge 2 ] || usage; bin=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
        --fast) compression=(-Zgzip -z1); shift ;;
        -h | --help) usage ;;
        *) echo "build-deb.sh: unknown argument $1" >&2; usage ;;
    esac
done

for tool in dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool not found (apt-get install dpkg)" >&2; exit 1; }
done

# Cargo resolves a relative CARGO_TARGET_DIR against the directory it runs in: the repository.
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in
    /*) ;;
    *) target_dir="$repo/$target_dir" ;;
esac

if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release -p tessera-tools >&2)
    bin="$target_dir/release/tessera"
fi
if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
    echo "build-deb.sh: $bin is not an executable file" >&2
    exit 1
fi
if [ "$(head -c 4 "$bin" | od -An -tx1 | tr -d ' ')" != "7f454c46" ]; then
    echo "build-deb.sh: $bin is not an ELF binary" >&2
    exit 1
fi
[ -n "$out" ] || out="$target_dir/deb"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Version of the workspace ([workspace.package] version in Cargo.toml); a Cargo pre-release
# (0.2.0-rc.1) becomes 0.2.0~rc.1 so that Debian sorts it before 0.2.0.
version=$(awk '
    /^\[/ { section = $0; next }
    section == "[workspace.package]" && $1 == "version" {
        gsub(/[" ]/, "", $3); print $3; exit
    }' "$repo/Cargo.toml")
if [ -z "$version" ]; then
    echo "build-deb.sh: no version under [workspace.package] in $repo/Cargo.toml" >&2
    exit 1
fi
version=${version//-/\~}
arch=$(dpkg --print-architecture)

# The newest glibc symbol version the binary needs becomes the libc6 lower bound (what
# dpkg-shlibdeps would compute, without needing a debian/ source tree).
glibc=$(grep -ao 'GLIBC_2\.[0-9][0-9.]*' "$bin" | sort -uV | tail -n 1 | sed 's/^GLIBC_//')
if [ -z "$glibc" ]; then
    echo "build-deb.sh: found no GLIBC_ symbol versions in $bin (a static binary?)" >&2
    exit 1
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/tessera-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/tessera_${version}_${arch}"

install -D -m 0755 "$bin" "$root/usr/bin/tessera"
install -D -m 0644 "$deploy/systemd/tessera.service" "$root/lib/systemd/system/tessera.service"
install -D -m 0644 "$deploy/systemd/tessera-coordinator.service" "$root/lib/systemd/system/tessera-coordinator.service"
install -D -m 0644 "$deploy/sysctl/60-tessera.conf" "$root/usr/lib/sysctl.d/60-tessera.conf"
install -D -m 0644 "$deploy/debian/sysusers.conf" "$root/usr/lib/sysusers.d/tessera.conf"
install -D -m 0644 "$deploy/tessera.toml" "$root/etc/tessera/tessera.toml"
install -d -m 0755 "$root/usr/share/doc/tessera"
cat >"$root/usr/share/doc/tessera/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tessera
Comment: The tessera binary statically links Rust crates under their own licenses
 (Apache-2.0, MIT and compatible ones), as listed in the source's Cargo.lock.

Files: *
Copyright: The Tessera authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations under
 the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
chmod 0644 "$root/usr/share/doc/tessera/copyright"
# Monitoring files, when present: scrape configuration, alert rules, dashboards.
for dir in prometheus grafana; do
    if [ -d "$deploy/$dir" ]; then
        install -d -m 0755 "$root/usr/share/tessera"
        cp -R "$deploy/$dir" "$root/usr/share/tessera/$dir"
        find "$root/usr/share/tessera/$dir" -type d -exec chmod 0755 {} +
        find "$root/usr/share/tessera/$dir" -type f -exec chmod 0644 {} +
    fi
done

install -d -m 0755 "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$deploy/debian/$script" "$root/DEBIAN/$script"
done
install -m 0644 "$deploy/debian/conffiles" "$root/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@GLIBC@/$glibc/" \
    -e "s/@INSTALLED_SIZE@/$installed_size/" "$deploy/debian/control" >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"
if grep -n '@[A-Z_]*@' "$root/DEBIAN/control" >&2; then
    echo "build-deb.sh: unfilled placeholder in the control file" >&2
    exit 1
fi

deb="$out/tessera_${version}_${arch}.deb"
# --root-owner-group: every file root:root in the archive, whoever builds it.
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >&2
echo "$deb"
