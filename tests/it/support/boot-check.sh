#!/bin/sh
# PID 1 of the image that tests/boot.rs boots in QEMU, in place of an init system: the
# kernel runs it as init= once the initramfs has mounted the root. It checks the booted
# system from inside, prints one `limopack-boot-check: NAME: ok` or `... NAME: FAIL why`
# line per check on the console, and powers the machine off. What to expect comes from
# /etc/limopack-boot-check.conf, which the test writes: KVER, DECLARED (a module that must
# load), PRUNED and PRUNED_FILE (a module that must be gone, and its path in the tree), and
# NET_DRIVER (the driver the network device must be bound to).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
. /etc/limopack-boot-check.conf

say() { echo "limopack-boot-check: $*"; }
check() { # STATUS NAME DETAIL: call as `check $? NAME DETAIL` right after the test
    if [ "$1" -eq 0 ]; then say "$2: ok $3"; else say "$2: FAIL $3"; fi
}

# initramfs-tools moves its /proc, /sys and /dev into the root; mount what is missing.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /proc && mountpoint -q /sys
check $? mounts "/proc and /sys"

[ "$(uname -r)" = "$KVER" ]
check $? kernel "$(uname -r)"

# The last entry for / is the one in force; its options start with rw or ro.
options=$(awk '$2 == "/" { o = $4 } END { print o }' /proc/mounts)
case "$options" in rw|rw,*) true ;; *) false ;; esac
check $? root-mounted-rw "$options"
echo written >/limopack-boot-check.written && [ "$(cat /limopack-boot-check.written)" = written ] &&
    rm /limopack-boot-check.written && sync
check $? root-writable "/limopack-boot-check.written"

# What udev does for each device at boot: load the modules its modalias names, from the
# root's pruned tree. Aliases of pruned drivers (or of none) find nothing, quietly.
find /sys/devices -name modalias -exec cat {} + 2>/dev/null | sort -u | xargs modprobe -a -q -b 2>/dev/null
net=
for dev in /sys/class/net/*; do
    driver=$(readlink "$dev/device/driver" 2>/dev/null) || continue
    [ "${driver##*/}" = "$NET_DRIVER" ] && net=${dev##*/}
done
[ -n "$net" ]
check $? net-driver-bound "${net:-no device bound to $NET_DRIVER} ($NET_DRIVER)"

out=$(modprobe "$DECLARED" 2>&1) && grep -q "^$DECLARED " /proc/modules
check $? declared-loads "modprobe $DECLARED${out:+: $out}"

[ ! -e "/lib/modules/$KVER/$PRUNED_FILE" ]
check $? pruned-absent "$PRUNED_FILE"
out=$(modprobe "$PRUNED" 2>&1)
status=$?
[ "$status" -ne 0 ] && echo "$out" | grep -q "Module $PRUNED not found" && ! grep -q "^$PRUNED " /proc/modules
check $? pruned-fails-cleanly "modprobe $PRUNED exited $status: $out"

# Bit 7 of the taint mask (D) is set once the kernel has oopsed or died.
[ $(( $(cat /proc/sys/kernel/tainted) & 128 )) -eq 0 ]
check $? no-oops "tainted=$(cat /proc/sys/kernel/tainted)"

say "modules loaded: $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
say "done"
sync
echo o >/proc/sysrq-trigger
# Wait for the power-off without touching the disk, which it takes away: running `sleep`
# then can fail to load (EIO), and PID 1 exiting before the power-off is a kernel panic. The
# console never sends anything, so the read waits; should the power-off not come, the test's
# time limit ends QEMU.
while :; do read -r _ </dev/console; done
