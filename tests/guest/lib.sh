# Shared by build.sh and build-arm64.sh (sourced): what every stand-in guest
# initramfs gets from its Debian kernel package and for its DHCP client.

# The virtio NIC's modules, in load order (Debian builds them as modules).
GUEST_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"

# guest_modules KERNEL_TREE ROOT: copy GUEST_MODULES, decompressed, from an
# extracted kernel package into ROOT/lib/modules.
guest_modules() {
  local m f
  mkdir -p "$2/lib/modules"
  for m in $GUEST_MODULES; do
    f=$(find "$1/lib/modules" -name "$m.ko*" | head -1)
    [ -n "$f" ] || continue
    case "$f" in
      *.xz) xz -dc "$f" > "$2/lib/modules/$m.ko" ;;
      *.zst) zstd -qdc "$f" > "$2/lib/modules/$m.ko" ;;
      *) cp "$f" "$2/lib/modules/$m.ko" ;;
    esac
  done
}

# guest_dhcp_hook ROOT: ROOT/dhcp.sh, the guest's udhcpc script (sets the
# address and route inside the VM only, and reports it on the console).
guest_dhcp_hook() {
  cat > "$1/dhcp.sh" <<'S'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" 2>/dev/null
    echo "KILN-GUEST: dhcp $ip" ;;
esac
exit 0
S
  chmod +x "$1/dhcp.sh"
}
