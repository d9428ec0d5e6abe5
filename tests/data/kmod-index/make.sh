#!/bin/sh
# make.sh OUT [CHROOT]: build a tiny module tree of fake modules (relocatable ELF objects whose
# .modinfo carries alias= records, as a kernel module's does), run depmod over it, and copy
# into OUT its modules.alias.bin and modules.alias, the index of an empty tree
# (empty.modules.alias.bin), and what `modprobe -R` answers for each key of keys.txt
# (modprobe-R.txt). With CHROOT, depmod and modprobe are that root's: the tree is built
# under its /tmp.
set -eu
out=$(realpath "$1")
root=${2:-}
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d "${root:-}/tmp/kmod-index.XXXXXX")
inside=${work#"$root"}
kver=6.1.0-test
run() { if [ -n "$root" ]; then chroot "$root" "$@"; else "$@"; fi; }

# mkmod PATH 'record' …: the module at PATH (under the tree), with these .modinfo records.
mkmod() {
	path=$work/full/lib/modules/$kver/$1
	name=$(basename "$1" .ko | tr - _)
	shift
	mkdir -p "$(dirname "$path")"
	{
		printf 'static const char modinfo[] __attribute__((section(".modinfo"), used, aligned(1))) =\n'
		for record in "$@" "name=$name" "license=GPL"; do printf '\t"%s\\0"\n' "$record"; done
		printf ';\n'
	} > "$work/$name.c"
	gcc -c -O0 -o "$path" "$work/$name.c"
	echo "${path#"$work/full/lib/modules/$kver/"}" >> "$work/full/lib/modules/$kver/modules.order"
}

mkdir -p "$work/full/lib/modules/$kver" "$work/empty/lib/modules/$kver" "$work/conf"
mkmod kernel/drivers/net/e1000e.ko \
	'alias=pci:v00008086d000015B8sv*sd*bc*sc*i*' 'alias=pci:v00008086d000015B7sv*sd*bc*sc*i*' \
	'alias=pci:v00008086d0000105Esv*sd*bc*sc*i*'
mkmod kernel/drivers/net/igb.ko \
	'alias=pci:v00008086d00001533sv*sd*bc*sc*i*' 'alias=pci:v00008086d000010C9sv*sd*bc*sc*i*'
mkmod kernel/drivers/ata/ahci.ko \
	'alias=pci:v*d*sv*sd*bc01sc06i01*' 'alias=pci:v00008086d00002822sv*sd*bc*sc*i*'
mkmod kernel/drivers/bluetooth/btusb.ko \
	'alias=usb:v*p*d*dc*dsc*dp*icE0isc01ip01in*' 'alias=usb:v0A5Cp21E8d*dc*dsc*dp*ic*isc*ip*in*' \
	'alias=usb:v8087p0A2Ad*dc*dsc*dp*ic*isc*ip*in*'
mkmod kernel/drivers/acpi/acpi-thing.ko 'alias=acpi*:PNP0C0[0-9A]:*' 'alias=acpi*:INT33A?:*'
mkmod kernel/fs/btrfs/btrfs.ko 'alias=fs-btrfs' 'alias=devname:btrfs-control' 'alias=char-major-10-234'
mkmod kernel/crypto/crc32c_generic.ko 'alias=crypto-crc32c' 'alias=crypto-crc32c-generic' 'alias=crc32c'
mkmod kernel/arch/x86/crypto/crc32c-intel.ko 'alias=crypto-crc32c' 'alias=crypto-crc32c-intel' 'alias=crc32c'
mkmod kernel/sound/soc/snd-soc-simple-card.ko \
	'alias=of:N*T*Csimple-audio-card' 'alias=of:N*T*Csimple-audio-cardC*' 'alias=platform:asoc-simple-card'

for tree in full empty; do
	touch "$work/$tree/lib/modules/$kver/modules.order" "$work/$tree/lib/modules/$kver/modules.builtin" \
		"$work/$tree/lib/modules/$kver/modules.builtin.modinfo"
	run depmod -b "$inside/$tree" "$kver"; done
mkdir -p "$out"
cp "$work/full/lib/modules/$kver/modules.alias.bin" "$work/full/lib/modules/$kver/modules.alias" "$out/"
cp "$work/empty/lib/modules/$kver/modules.alias.bin" "$out/empty.modules.alias.bin"
while read -r key; do
	printf '%s:' "$key"
	run modprobe -C "$inside/conf" -d "$inside/full" -S "$kver" -R "$key" 2>/dev/null | tr '\n' ' ' || true
	echo
done < "$here/keys.txt" > "$out/modprobe-R.txt"
rm -r "$work"
