#!/usr/bin/env bash
# Build the arm64 stand-in guest for the aarch64 netboot test from Debian
# packages (../shared/e2e/ARM64.md): Debian's arm64 kernel, a busybox
# initramfs whose /init does what a netbooted Talos does first (DHCP, fetch
# talos.config=, with ${mac} filled in as Talos fills it) and reports on the
# serial console (ttyAMA0), and iPXE for arm64 (trixie's ipxe package ships
# ipxe-arm64.efi; bookworm's has none).
# Usage: build-arm64.sh OUTDIR [UKI_CMDLINE]
#   -> OUTDIR/vmlinuz-arm64, OUTDIR/initramfs-arm64.gz, OUTDIR/ipxe-arm64.efi
#   (cached); with UKI_CMDLINE also OUTDIR/uki.efi: kernel, initramfs and that
#   command line in one EFI binary (systemd's stub, sections placed by objcopy
#   as ukify would), as the Image Factory's metal-arm64-uki.efi is.
# Needs: dpkg --add-architecture arm64 && apt-get update; binutils-aarch64-linux-gnu.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
out=$1
cmdline=${2:-}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! { [ -s "$out/vmlinuz-arm64" ] && [ -s "$out/initramfs-arm64.gz" ] && [ -s "$out/ipxe-arm64.efi" ] \
  && [ -s "$out/linuxaa64.efi.stub" ] && [ "$out/initramfs-arm64.gz" -nt "$0" ] && [ "$out/initramfs-arm64.gz" -nt "$here/lib.sh" ]; }; then
  pkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')
  [ -n "$pkg" ] || { echo "cannot resolve linux-image-arm64:arm64 (dpkg --add-architecture arm64 && apt-get update?)" >&2; exit 1; }
  apt-get download -q "${pkg%:arm64}:arm64" busybox-static:arm64 systemd-boot-efi:arm64 >/dev/null
  dpkg-deb -x ./linux-image-*.deb kernel
  dpkg-deb -x ./busybox-static_*.deb bb
  dpkg-deb -x ./systemd-boot-efi_*.deb stub
  # trixie's ipxe (Architecture: all), located through its Packages index.
  mirror=http://deb.debian.org/debian
  curl -fsS -o Packages.xz "$mirror/dists/trixie/main/binary-all/Packages.xz"
  deb=$(xz -dc Packages.xz | awk '/^Package: ipxe$/{p=1} p && /^Filename:/ && !f {print $2; f=1}')
  [ -n "$deb" ] || { echo "no ipxe in trixie's Packages index" >&2; exit 1; }
  curl -fsS -o ipxe.deb "$mirror/$deb"
  dpkg-deb -x ipxe.deb ipxe
  mkdir -p root/bin root/lib/modules root/proc root/sys root/dev root/tmp
  cp bb/bin/busybox root/bin/busybox
  guest_modules kernel root
  guest_dhcp_hook root
  cat > root/init <<S
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The last console= is tty0: report on the serial port itself.
exec > /dev/ttyAMA0 2>&1
for m in $GUEST_MODULES; do
  [ -f /lib/modules/\$m.ko ] && insmod /lib/modules/\$m.ko 2>/dev/null
done
echo "KILN-GUEST: booted \$(uname -m) \$(uname -r)"
echo "KILN-GUEST: cmdline \$(cat /proc/cmdline)"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -n -t 10 -T 2 -s /dhcp.sh || echo "KILN-GUEST: dhcp-failed"
url=\$(sed -n 's/.*talos\.config=\([^ ]*\).*/\1/p' /proc/cmdline)
# As Talos: \${mac} in a query value becomes the NIC's address, %3A-escaped.
mac=\$(sed 's/:/%3A/g' /sys/class/net/eth0/address)
url=\$(echo "\$url" | sed "s/\\\${mac}/\$mac/g; s/\\\${uuid}//g")
echo "KILN-GUEST: config-url \$url"
if timeout 20 wget -q -O /tmp/config "\$url"; then
  echo "KILN-GUEST: config-begin"
  cat /tmp/config
  echo
  echo "KILN-GUEST: config-end"
else
  echo "KILN-GUEST: config-fetch-failed"
fi
echo "KILN-GUEST: done"
poweroff -f
S
  chmod +x root/init
  (cd root && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs-arm64.gz.tmp"
  cp kernel/boot/vmlinuz-* "$out/vmlinuz-arm64"
  cp ipxe/usr/lib/ipxe/ipxe-arm64.efi "$out/ipxe-arm64.efi"
  cp stub/usr/lib/systemd/boot/efi/linuxaa64.efi.stub "$out/linuxaa64.efi.stub"
  mv "$out/initramfs-arm64.gz.tmp" "$out/initramfs-arm64.gz"
fi
if [ -n "$cmdline" ]; then
  printf '%s' "$cmdline" > cmdline
  printf 'ID=kiln-test\nNAME="kiln arm64 test guest"\n' > osrel
  ksize=$(stat -c %s "$out/vmlinuz-arm64")
  initrd_vma=$(printf '0x%x' $(( (0x40000 + ksize + 0xffff) / 0x10000 * 0x10000 )))
  aarch64-linux-gnu-objcopy \
    --add-section .osrel=osrel --change-section-vma .osrel=0x20000 \
    --add-section .cmdline=cmdline --change-section-vma .cmdline=0x30000 \
    --add-section .linux="$out/vmlinuz-arm64" --change-section-vma .linux=0x40000 \
    --add-section .initrd="$out/initramfs-arm64.gz" --change-section-vma .initrd="$initrd_vma" \
    "$out/linuxaa64.efi.stub" "$out/uki.efi.tmp"
  mv "$out/uki.efi.tmp" "$out/uki.efi"
fi
echo "arm64 guest built in $out"
