#!/bin/bash
# Boot the test VM (Debian kernel + systemd, cgroup v2) under qemu, run one command, collect
# its output and exit code, power off.
#
#   vm/run-vm.sh [--accel tcg|kvm] [--fast] [--cmd FILE] [--src DIR] [--mem MiB] [--smp N]
#                [--timeout S] [--outdir DIR] [--append "kernel args"]
#     --cmd FILE  executable copied to /tb/cmd in the guest and run there (cwd /tb, as root,
#                 inside tb-run.service); default: /opt/testbed/tb_checks.sh
#     --src DIR   shared read-only at /src in the guest (e.g. the project checkout);
#                 a .deb built on the host can be installed with: dpkg -i /src/....deb
#   Guest /opt/testbed = testbed/payload (9p, ro); guest /tb = OUTDIR/share (9p, rw): the
#   command's output.log, rc, journal.txt, systemd-analyze.txt land there.
#   Exit status: the guest command's (from OUTDIR/share/rc), or 90+ for harness failures.
#
# KVM on this host is PVM-only nested virtualization: a stock Debian kernel hangs right after
# "Probing EDD" with -enable-kvm, so the default is --accel tcg (software emulation).
set -uo pipefail
# Adapted from shared/testbed/vm/run-vm.sh: the build directory comes from TESTBED_BUILD.
here=$(cd "$(dirname "$0")" && pwd)
build=${TESTBED_BUILD:?set TESTBED_BUILD}
vm=$build/vm
accel=tcg; fast=0; cpu=; cmd=; src=; mem=1024; smp=2; tmo=600; outdir=; append=
while [ $# -gt 0 ]; do case $1 in
  --accel) accel=$2; shift 2;;
  --fast) fast=1; shift;;
  --cpu) cpu=$2; shift 2;;
  --cmd) cmd=$(readlink -f "$2"); shift 2;;
  --src) src=$(cd "$2" && pwd); shift 2;;
  --mem) mem=$2; shift 2;;
  --smp) smp=$2; shift 2;;
  --timeout) tmo=$2; shift 2;;
  --outdir) outdir=$2; shift 2;;
  --append) append=$2; shift 2;;
  *) echo "unknown option $1" >&2; exit 90;;
esac; done
[ -f "$vm/root.img" ] || { echo "no image: run vm/build-image.sh" >&2; exit 91; }
name=tbvm-$$-$RANDOM
outdir=${outdir:-$build/logs/$name}
mkdir -p "$outdir/share"; rm -f "$outdir/share/rc" "$outdir/share/cmd"
[ -n "$cmd" ] && { cp "$cmd" "$outdir/share/cmd"; chmod +x "$outdir/share/cmd"; }
ts(){ date +%s.%N; }
dt(){ awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }

case $accel in
  kvm) acc=(-accel kvm -cpu host,-arch-capabilities);;     # -cpu host alone trips MSR 0x10a here
  tcg) acc=(-accel tcg,thread=multi -cpu "${cpu:-qemu64}");;
  *) echo "bad --accel" >&2; exit 90;;
esac
kargs="root=/dev/vda rw console=ttyS0 panic=-1 fsck.mode=skip systemd.wants=tb-run.service"
kargs="$kargs loglevel=4 systemd.show_status=error mitigations=off"
# --fast: skip work a throwaway test VM does not need (fstab root entry -> no wait for the
# dev-vda.device / remount-fs, e2scrub); everything else stays a normal Debian boot
[ $fast = 1 ] && kargs="$kargs fstab=no systemd.mask=e2scrub_reap.service systemd.mask=systemd-remount-fs.service"
kargs="$kargs $append"
share() { echo "local,path=$1,mount_tag=$2,security_model=none,id=$2${3:+,readonly=on}"; }
q=(qemu-system-x86_64 "${acc[@]}" -m "$mem" -smp "$smp" -no-reboot -nographic -nic none
   -monitor none -serial "file:$outdir/serial.log"
   -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" -append "$kargs"
   -drive "file=$vm/root.img,format=raw,if=virtio,snapshot=on"
   -device virtio-rng-pci
   -virtfs "$(share "$here/../payload" tbpayload ro)" -virtfs "$(share "$outdir/share" tbout)")
[ -n "$src" ] && q+=(-virtfs "$(share "$src" tbsrc ro)")

QPID=
cleanup() { if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
  kill -TERM "$QPID"; sleep 1; kill -0 "$QPID" 2>/dev/null && kill -KILL "$QPID"; wait "$QPID" 2>/dev/null; fi; }
trap cleanup EXIT
trap 'exit 93' INT TERM

: > "$outdir/serial.log"
t0=$(ts)
"${q[@]}" > "$outdir/qemu.log" 2>&1 < /dev/null &
QPID=$!
ready=
while kill -0 "$QPID" 2>/dev/null; do
  if [ -z "$ready" ] && grep -q 'TB-READY' "$outdir/serial.log" 2>/dev/null; then
    ready=$(ts); echo "TIMING host_boot_to_ready_s=$(dt "$t0" "$ready") $(grep -o 'guest_uptime_s=[0-9.]*' "$outdir/serial.log" | head -1)" | tee "$outdir/timings"
  fi
  if [ "$(awk -v a="$t0" -v b="$(ts)" 'BEGIN{print int(b-a)}')" -ge "$tmo" ]; then
    echo "TIMEOUT after ${tmo}s; serial tail:"; tail -20 "$outdir/serial.log"; exit 96; fi
  sleep 0.2
done
wait "$QPID"; qrc=$?; QPID=
t1=$(ts)
echo "TIMING total_s=$(dt "$t0" "$t1") qemu_rc=$qrc${ready:+ ready_to_poweroff_s=$(dt "$ready" "$t1")}" | tee -a "$outdir/timings"
[ -s "$outdir/share/output.log" ] && cat "$outdir/share/output.log"
if [ -f "$outdir/share/rc" ]; then exit "$(cat "$outdir/share/rc")"; fi
echo "no rc from guest; serial tail:"; tail -30 "$outdir/serial.log"; cat "$outdir/qemu.log"
exit 98
