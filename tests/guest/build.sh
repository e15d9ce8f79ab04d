#!/usr/bin/env bash
# Build the stand-in guest for netboot tests from Debian packages: the Debian
# cloud kernel, and a busybox initramfs whose /init does what a netbooted Talos
# does first (DHCP, fetch talos.config=) and reports on the serial console.
# Usage: build.sh OUTDIR [FAKE_TALOS]
#   -> OUTDIR/vmlinuz, OUTDIR/initramfs.gz (cached); with FAKE_TALOS (a static
#   binary) also OUTDIR/initramfs-talos.gz, whose /init runs it after DHCP.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
out=$1
fake=${2:-}
if [ -n "$fake" ]; then
  [ -s "$out/initramfs-talos.gz" ] && [ "$out/initramfs-talos.gz" -nt "$fake" ] && [ "$out/initramfs-talos.gz" -nt "$0" ] && [ -s "$out/vmlinuz" ] && exit 0
else
  [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.gz" ] && exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$pkg" ] || { echo "cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
apt-get download -q "$pkg" >/dev/null
dpkg-deb -x ./*.deb kernel
bb=$(command -v busybox)
file "$bb" | grep -q 'statically linked' || bb=/bin/busybox
mkdir -p root/bin root/lib/modules root/proc root/sys root/dev root/tmp root/etc
cp "$bb" root/bin/busybox
guest_modules kernel root
guest_dhcp_hook root
cat > root/init <<'S'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
echo "KILN-GUEST: booted $(uname -r)"
echo "KILN-GUEST: cmdline $(cat /proc/cmdline)"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -n -t 10 -T 2 -s /dhcp.sh || echo "KILN-GUEST: dhcp-failed"
url=$(sed -n 's/.*talos\.config=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "KILN-GUEST: config-url $url"
if timeout 20 wget -q -O /tmp/config "$url"; then
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
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.gz.tmp"
cp kernel/boot/vmlinuz-* "$out/vmlinuz.tmp"
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
if [ -n "$fake" ]; then
  # The Talos stand-in: DHCP like Talos, then the fake takes over.
  cp "$fake" root/fake-talos
  chmod +x root/fake-talos
  # Control planes run a real etcd member: Debian's etcd and etcdctl (Go,
  # linked against glibc only), with the loader and libc they need.
  for b in etcd etcdctl; do
    p=$(command -v "$b") || { echo "$b not found (Debian packages etcd-server, etcd-client)" >&2; exit 1; }
    cp "$p" root/bin/
    for lib in $(ldd "$p" | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
      mkdir -p "root$(dirname "$lib")"
      cp -L "$lib" "root$lib"
    done
  done
  cat > root/init <<'S'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
echo "KILN-GUEST: booted $(uname -r)"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -n -t 10 -T 2 -s /dhcp.sh || echo "KILN-GUEST: dhcp-failed"
/fake-talos
echo "KILN-GUEST: fake-talos exited"
poweroff -f
S
  chmod +x root/init
  (cd root && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs-talos.gz.tmp"
  mv "$out/initramfs-talos.gz.tmp" "$out/initramfs-talos.gz"
fi
echo "guest built in $out"
