#!/usr/bin/env bash
# DHCP full-mode benchmark: kiln vs dnsmasq vs Kea, one after the other, on the
# same veth pair between two network namespaces, driven by perfdhcp (kea-admin).
# For each server and rate: DORA exchanges/s achieved, drops, and average
# DISCOVER-OFFER / REQUEST-ACK delay. Every lease is durable before its ACK in
# kiln (group commit); dnsmasq and Kea write their lease files as they do.
#
#   sudo bench/dhcp.sh [RATES...]        (default rates: 500 1000 2000 4000 8000)
#   sudo SERVERS="kiln kea-mt" bench/dhcp.sh 8000 12000 16000
#                                        (kea-mt: Kea with multi-threading on,
#                                        2 threads, its fastest setup here)
#   sudo SERVERS="kiln kiln-etcd kea" bench/dhcp.sh
#                                        (kiln-etcd: kiln on a 3-member etcd,
#                                        Debian's etcd-server over unix sockets,
#                                        every lease a quorum write before its ACK)
#
# Prints a Markdown table, each cell the median of RUNS runs (default 3, SECS=5
# each); needs root, iproute2, perfdhcp, dnsmasq, kea-dhcp4.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${*:-500 1000 2000 4000 8000}
SECS=${SECS:-5}
RUNS=${RUNS:-3}
. bench/lib.sh
bench_pair kb-srv kb-cli kb0 kb1 10.98.0.1/16 10.98.255.254/16

cargo build --release -q
KILN=$PWD/target/release/kiln

STORE=
start_kiln() {
  mkdir -p "$work/kiln/profiles" "$work/kiln/ipxe"
  printf 'role: worker\ntalos_version: v1.13.9\nkernel: http://x/k\ninitramfs: http://x/i\n' > "$work/kiln/profiles/worker.yaml"
  printf 'machines: []\n' > "$work/kiln/machines.yaml"
  : > "$work/kiln/ipxe/undionly.kpxe"; : > "$work/kiln/ipxe/ipxe.efi"
  rm -rf "$work/kiln/state"
  cat > "$work/kiln/kiln.yaml" <<Y
interface: kb0
server_address: 10.98.0.1
ipxe_dirs: [./ipxe]
state_dir: ./state
unknown_machines: boot
default_profile: worker
dhcp: {mode: full, subnet: 10.98.0.0/16, range: [10.98.1.0, 10.98.250.255], lease_time: 1h}
$STORE
Y
  KILN_LOG=warn ip netns exec $NS_S "$KILN" serve --config "$work/kiln/kiln.yaml" > "$work/kiln.log" 2>&1 &
  sleep 1.5
}
start_dnsmasq() {
  rm -f "$work/dnsmasq.leases"
  ip netns exec $NS_S dnsmasq --no-daemon --port=0 --interface=kb0 --bind-interfaces --dhcp-authoritative \
    --dhcp-range=10.98.1.0,10.98.250.255,1h --dhcp-leasefile="$work/dnsmasq.leases" --no-ping --quiet-dhcp \
    --dhcp-lease-max=100000 --conf-file=/dev/null > "$work/dnsmasq.log" 2>&1 &
  sleep 1
}
start_kea() {
  mkdir -p /run/kea
  rm -f "$work/kea.leases"
  cat > "$work/kea.json" <<J
{"Dhcp4": {"interfaces-config": {"interfaces": ["kb0"], "dhcp-socket-type": "raw"},$KEA_MT
 "lease-database": {"type": "memfile", "persist": true, "name": "$work/kea.leases", "lfc-interval": 0},
 "valid-lifetime": 3600, "authoritative": true,
 "subnet4": [{"id": 1, "subnet": "10.98.0.0/16", "pools": [{"pool": "10.98.1.0 - 10.98.250.255"}]}]}}
J
  ip netns exec $NS_S kea-dhcp4 -c "$work/kea.json" > "$work/kea.log" 2>&1 &
  sleep 1.5
}
# kiln on etcd: a fresh prefix each run (no leases left from the last).
start_kiln-etcd() {
  [ -n "${ETCD_ENDPOINTS:-}" ] || etcd_up
  STORE="store: {backend: etcd, endpoints: $ETCD_ENDPOINTS, prefix: /bench-$RANDOM$RANDOM, daemon: bench}"
  start_kiln
  STORE=
  sleep 1
}
KEA_MT=
# Kea's fastest setup: multi-threading on, one thread per core here.
start_kea-mt() {
  KEA_MT=' "multi-threading": {"enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64},'
  start_kea
  KEA_MT=
}

echo "| server | target rate (DORA/s) | achieved (DORA/s, median of $RUNS) | drops % (median) | avg offer delay ms (median) | avg ack delay ms (median) |"
echo "|---|---|---|---|---|---|"
for server in ${SERVERS:-kiln dnsmasq kea kea-mt}; do
  for rate in $RATES; do
    : > "$work/r"; : > "$work/d"; : > "$work/o"; : > "$work/a"
    for run in $(seq "$RUNS"); do
      start_$server
      out=$(ip netns exec $NS_C perfdhcp -4 -B -l kb1 -R 60000 -r "$rate" -p "$SECS" 2>&1 || true)
      stop_server
      echo "$out" | awk '/^Rate:/{print $2; exit}' >> "$work/r"
      sent=$(echo "$out" | awk '/sent packets:/{print $3; exit}')
      drops=$(echo "$out" | awk '/drops:/{s+=$2} END {print s+0}')
      [ -n "$sent" ] && echo "$drops $sent" | awk '{printf "%.2f\n", 100*$1/($2>0?$2:1)}' >> "$work/d"
      echo "$out" | awk '/avg delay:/{print $3}' | sed -n 1p >> "$work/o"
      echo "$out" | awk '/avg delay:/{print $3}' | sed -n 2p >> "$work/a"
    done
    echo "| $server | $rate | $(median < "$work/r") | $(median < "$work/d") | $(median < "$work/o") | $(median < "$work/a") |"
  done
done
