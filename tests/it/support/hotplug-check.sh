#!/bin/sh
# Run by limopack-hotplug-check.service in the systemd-booted image that tests/it/hotplug.rs
# boots in QEMU, once udev's coldplug has run. It checks from inside what limopack's udev
# rule did for devices whose driver was pruned, prints one `limopack-hotplug-check: NAME: ok`
# or `... NAME: FAIL why` line per check on the console, and powers the machine off. The
# kernel command line says which boot this is (limopack.check=notify or =restore); what to
# expect comes from /etc/limopack-hotplug-check.conf, which the test writes: KVER, RNG_FILE
# and BALLOON_FILE (the pruned drivers' files in the tree), PACKAGE (the kernel package they
# were pruned from) and LATER (a .deb whose install is the apt transaction after the restores).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
. /etc/limopack-hotplug-check.conf
TREE=/lib/modules/$KVER
DECLARED=/etc/limopack/modules.d/hotplug.yaml

say() { echo "limopack-hotplug-check: $*" >/dev/console; }
check() { # STATUS NAME DETAIL: call as `check $? NAME DETAIL` right after the test
    if [ "$1" -eq 0 ]; then say "$2: ok $3"; else say "$2: FAIL $3"; fi
}
# Each line of standard input on the console, after LABEL.
show() { while IFS= read -r line; do say "$1: $line"; done; }
# The sysfs folder of the first virtio device of type ID (8 hex digits); fails when none.
device() {
    for dev in /sys/bus/virtio/devices/*; do
        grep -q "^virtio:d$1v" "$dev/modalias" 2>/dev/null && { echo "$dev"; return 0; }
    done
    return 1
}
bound() { dev=$(device "$1") && [ -e "$dev/driver" ]; }
# Retries COMMAND once a second for up to SECONDS; fails when it never succeeded.
within() {
    left=$1; shift
    until "$@"; do
        [ "$left" -gt 0 ] || return 1
        left=$((left - 1)); sleep 1
    done
}
finish() {
    say "modules loaded: $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
    say "done"
    sync
    systemctl --no-block poweroff
    exit 0
}

mode=$(sed -n 's/.*limopack\.check=\([a-z]*\).*/\1/p' /proc/cmdline)
udevadm settle --timeout=120
rng=$(device 00000004)
check $? rng-present "${rng:-no virtio device of type 4 (virtio-rng)}"

if [ "$mode" = notify ]; then
    # hotplug: notify (the default). The driver stays pruned, and the journal says so.
    journalctl -b -t limopack -o cat --no-pager | show journal
    journalctl -b -t limopack -o cat --no-pager | grep -q "needs virtio_rng, pruned from $PACKAGE"
    check $? notified "the journal names virtio_rng"
    ! bound 00000004 && [ ! -e "$TREE/$RNG_FILE" ] && ! grep -q '^virtio_rng ' /proc/modules
    check $? rng-unbound "$rng has no driver, $RNG_FILE is absent"
    limopack-hook status 2>&1 | show status
    limopack-hook status 2>&1 | grep -q "needs virtio_rng, pruned from $PACKAGE; run .limopack-hook restore virtio_rng."
    check $? status-names-device "status names $rng"
    [ ! -e "$DECLARED" ]
    check $? nothing-declared "$DECLARED"
    finish
fi

# hotplug: restore. The coldplug queued the restore: it brings the file back, declares it and
# re-triggers the device, which binds.
within 900 bound 00000004
check $? rng-bound "$(readlink "$rng/driver" || echo "$rng has no driver")"
journalctl -b -t limopack -o cat --no-pager | show journal
[ -e "$TREE/$RNG_FILE" ] && grep -q '^virtio_rng ' /proc/modules
check $? rng-loaded "$RNG_FILE"
grep -q '^  - virtio_rng  # for /devices/' "$DECLARED"
check $? rng-declared "$DECLARED"

# A device hot-added through QEMU's monitor, whose driver was pruned too. While its restore
# runs, the device is added again three times, as one that comes and goes would be: that
# queues no second restore.
say "ready for device_add"
within 120 device 00000005 >/dev/null
balloon=$(device 00000005)
check $? balloon-present "${balloon:-no virtio device of type 5 (virtio-balloon)}"
for again in 1 2 3; do udevadm trigger --action=add "$balloon"; done
within 900 bound 00000005
check $? balloon-bound "$(dev=$(device 00000005) && readlink "$dev/driver" || echo "no bound virtio device of type 5 (virtio-balloon)")"
journalctl -b -u 'limopack-restore-*' -o cat --no-pager | show restore-units
[ -e "$TREE/$BALLOON_FILE" ] && grep -q '^  - virtio_balloon  # for /devices/' "$DECLARED"
check $? balloon-declared "$BALLOON_FILE"
show hotplug.yaml <"$DECLARED"
queued=$(journalctl -b -t limopack -o cat --no-pager | grep -c "needs virtio_balloon, .*; restoring it$")
waited=$(journalctl -b -t limopack -o cat --no-pager | grep -c "needs virtio_balloon, .*; a restore of it is under way")
[ "$queued" -eq 1 ] && [ "$waited" -ge 1 ]
check $? restored-once "queued $queued, under way $waited"

# An apt transaction afterwards runs limopack's hook again: both drivers stay.
DEBIAN_FRONTEND=noninteractive apt-get -q install -y "$LATER" 2>&1 | show apt
limopack-hook --dry-run 2>&1 | show dry-run
[ -e "$TREE/$RNG_FILE" ] && [ -e "$TREE/$BALLOON_FILE" ] && dpkg-query -W later-user >/dev/null
check $? kept-after-apt "$RNG_FILE $BALLOON_FILE"
finish
