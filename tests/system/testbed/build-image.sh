#!/bin/bash
# Build the VM disk image (ext4, raw) + kernel + initrd from the mmdebstrap tree (adapted from
# shared/testbed/vm/build-image.sh).
#   build-image.sh BUILD   -> BUILD/vm/{root.img,vmlinuz,initrd.img} from BUILD/vmroot
# Env: IMG_SIZE (default 2G, sparse). No loop devices or mounts: mkfs.ext4 -d copies the tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: build-image.sh BUILD}
rootfs=$build/vmroot
out=$build/vm
t0=$(date +%s.%N)
ls "$rootfs"/boot/vmlinuz-* >/dev/null || { echo "rootfs has no kernel (WITH_KERNEL=0?)" >&2; exit 1; }
mkdir -p "$out"; stage=$out/stage
rm -rf "$stage"
cp -al "$rootfs" "$stage"          # hard-link copy: instant; replace files with rm+write only
put() { rm -f "$stage/$2"; mkdir -p "$(dirname "$stage/$2")"; cp "$1" "$stage/$2"; chmod "$3" "$stage/$2"; }
put "$here/vm/fstab" etc/fstab 644
put "$here/vm/tb-run.service" etc/systemd/system/tb-run.service 644
put "$here/vm/tb-guest-run" usr/local/sbin/tb-guest-run 755
for m in tb.mount opt-testbed.mount src.mount; do put "$here/vm/$m" "etc/systemd/system/$m" 644; done
mkdir -p "$stage/opt/testbed" "$stage/tb" "$stage/src"
# no periodic jobs in a test VM
for t in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
  rm -f "$stage/etc/systemd/system/timers.target.wants/$t"; done
cp "$stage"/boot/vmlinuz-* "$out/vmlinuz.tmp"; cp "$stage"/boot/initrd.img-* "$out/initrd.img.tmp"
rm -f "$out/root.img.tmp"
mkfs.ext4 -q -F -L tbroot -E lazy_itable_init=1 -O ^has_journal -d "$stage" "$out/root.img.tmp" "${IMG_SIZE:-2G}"
mv "$out/root.img.tmp" "$out/root.img"; mv "$out/vmlinuz.tmp" "$out/vmlinuz"; mv "$out/initrd.img.tmp" "$out/initrd.img"
rm -rf "$stage"
t1=$(date +%s.%N)
echo "image built in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s: $(du -h --apparent-size "$out/root.img" | cut -f1) apparent, $(du -h "$out/root.img" | cut -f1) on disk; kernel $(du -h "$out/vmlinuz" | cut -f1), initrd $(du -h "$out/initrd.img" | cut -f1)"
