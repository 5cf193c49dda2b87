#!/bin/bash
# Build a throwaway Debian bookworm tree (systemd + python3 + circus-sd's Debian dependencies) for
# the systemd test bed. Adapted from shared/testbed/common/build-rootfs.sh.
# Usage: build-rootfs.sh OUTDIR   (the Makefile passes .build/testbed/rootfs)
# Needs: mmdebstrap (the Makefile installs it), root, the Debian mirror.
# All mounts mmdebstrap makes are confined to a private mount namespace (unshare -m).
set -euo pipefail
out=${1:?usage: build-rootfs.sh OUTDIR}
mirror=${MIRROR:-http://deb.debian.org/debian}
secmirror=${SECMIRROR:-http://deb.debian.org/debian-security}
pkgs=systemd,systemd-sysv,dbus,procps,iproute2,python3,python3-pip
# circus-sd's runtime dependencies, as the Debian package will depend on them.
pkgs=$pkgs,python3-zmq,python3-psutil,python3-systemd,python3-sdnotify,python3-rich,python3-prometheus-client,adduser
# The VM tier's tree (WITH_KERNEL=1): a kernel to boot, and pytest for the suite run inside.
if [ "${WITH_KERNEL:-0}" = 1 ]; then
  pkgs=$pkgs,udev,kmod,linux-image-amd64,initramfs-tools,python3-pytest
fi
pkgs=$pkgs${EXTRA_PKGS:+,$EXTRA_PKGS}
cache=${APT_CACHE:-$(dirname "$out")/apt-cache}     # downloaded .debs kept here between builds
rm -rf "$out.tmp"; mkdir -p "$(dirname "$out")" "$cache"
t0=$(date +%s.%N)
timeout 1200 unshare --mount --propagation private \
  mmdebstrap --mode=root --variant=minbase --include="$pkgs" \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"; echo MODULES=list > "$1/etc/initramfs-tools/conf.d/testbed.conf"; echo COMPRESS=gzip >> "$1/etc/initramfs-tools/conf.d/testbed.conf"; printf "%s\n" virtio_pci virtio_blk virtio_console ext4 crc32c_generic 9p 9pnet_virtio > "$1/usr/share/initramfs-tools/modules.d/testbed.conf"' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in '$cache' /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives '$cache'" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook='echo testbed > "$1/etc/hostname"; : > "$1/etc/machine-id"; passwd --root "$1" -d root' \
    bookworm "$out.tmp" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $secmirror bookworm-security main"
rm -rf "$out"; mv "$out.tmp" "$out"
t1=$(date +%s.%N)
echo "rootfs built in $(echo "$t1 - $t0" | bc) s; size: $(du -sh "$out" | cut -f1)"
