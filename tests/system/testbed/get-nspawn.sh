#!/bin/bash
# Print the path of a systemd-nspawn binary usable on this host, without installing anything:
# an installed one if present, else systemd-container of EXACTLY the host's systemd version
# unpacked (dpkg -x) under build/ (it links against the host's libsystemd-shared-<ver>.so).
# Installing systemd-container instead would pull a newer systemd onto the host.
set -euo pipefail
# Build output beside the rootfs (the Makefile exports TESTBED_BUILD).
build=${TESTBED_BUILD:?set TESTBED_BUILD}
if command -v systemd-nspawn >/dev/null; then command -v systemd-nspawn; exit 0; fi
v=$(dpkg-query -W -f='${Version}' systemd)
dir=$build/nspawn-$v
if [ ! -x "$dir/usr/bin/systemd-nspawn" ]; then
  mkdir -p "$build/debs"
  ( cd "$build/debs" && timeout 300 apt-get download -q "systemd-container=$v" >&2 ) || {
    echo "get-nspawn: systemd-container=$v not downloadable; use: apt-get install --no-install-recommends systemd-container" >&2; exit 1; }
  rm -rf "$dir.tmp" && dpkg -x "$build/debs/systemd-container_${v/:/%3a}_amd64.deb" "$dir.tmp" && mv "$dir.tmp" "$dir"
fi
"$dir/usr/bin/systemd-nspawn" --version >/dev/null
echo "$dir/usr/bin/systemd-nspawn"
