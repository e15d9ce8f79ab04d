#!/usr/bin/env bash
# proxyDHCP benchmark: kiln vs dnsmasq (proxy mode), one after the other, on the
# same veth pair between two network namespaces, driven by perfdhcp (kea-admin)
# sending PXE DISCOVERs (option 60 "PXEClient:Arch:00000:UNDI:002001", option
# 93 = 0) and counting the proxy OFFERs (perfdhcp -i: DISCOVER-OFFER only).
#
#   sudo bench/proxydhcp.sh [RATES...]   (default: 1000 4000 16000)
#   RUNS=3 SECS=5 by default; prints one Markdown row per server and rate with
#   the median over the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${*:-1000 4000 16000}
SECS=${SECS:-5}
RUNS=${RUNS:-3}
. bench/lib.sh
bench_pair kp-srv kp-cli kp0 kp1 10.97.0.1/16 10.97.255.254/16

cargo build --release -q
KILN=$PWD/target/release/kiln

start_kiln() {
  mkdir -p "$work/kiln/profiles" "$work/kiln/ipxe"
  printf 'role: worker\ntalos_version: v1.13.9\nkernel: http://x/k\ninitramfs: http://x/i\n' > "$work/kiln/profiles/worker.yaml"
  printf 'machines: []\n' > "$work/kiln/machines.yaml"
  : > "$work/kiln/ipxe/undionly.kpxe"; : > "$work/kiln/ipxe/ipxe.efi"
  rm -rf "$work/kiln/state"
  cat > "$work/kiln/kiln.yaml" <<Y
interface: kp0
server_address: 10.97.0.1
ipxe_dirs: [./ipxe]
state_dir: ./state
unknown_machines: boot
default_profile: worker
dhcp: {mode: proxy}
Y
  KILN_LOG=warn ip netns exec $NS_S "$KILN" serve --config "$work/kiln/kiln.yaml" > "$work/kiln.log" 2>&1 &
  sleep 1.5
}
start_dnsmasq() {
  ip netns exec $NS_S dnsmasq --no-daemon --port=0 --interface=kp0 --bind-interfaces \
    --dhcp-range=10.97.0.0,proxy,255.255.0.0 --pxe-service=x86PC,"kiln",undionly \
    --dhcp-no-override --quiet-dhcp --log-facility=- --conf-file=/dev/null > "$work/dnsmasq.log" 2>&1 &
  sleep 1
}

PXE60=505845436c69656e743a417263683a30303030303a554e44493a303032303031
echo "| server | target rate (DISCOVER/s) | OFFERs/s (median of $RUNS) | lost (median) | avg offer delay ms (median) |"
echo "|---|---|---|---|---|"
for server in kiln dnsmasq; do
  for rate in $RATES; do
    : > "$work/rates"; : > "$work/drops"; : > "$work/delays"
    for run in $(seq "$RUNS"); do
      start_$server
      out=$(ip netns exec $NS_C perfdhcp -4 -i -B -l kp1 -R 60000 -r "$rate" -p "$SECS" \
        -o "60,$PXE60" -o 93,0000 2>&1 || true)
      stop_server
      echo "$out" | awk '/^Rate:/{print $2; exit}' >> "$work/rates"
      sent=$(echo "$out" | awk '/sent packets:/{print $3; exit}')
      drops=$(echo "$out" | awk '/drops:/{print $2; exit}')
      [ -n "$sent" ] && [ -n "$drops" ] && echo "$drops $sent" | awk '{printf "%.2f\n", 100*$1/($2>0?$2:1)}' >> "$work/drops"
      echo "$out" | awk '/avg delay:/{print $3; exit}' >> "$work/delays"
    done
    echo "| $server | $rate | $(median < "$work/rates") | $(median < "$work/drops")% | $(median < "$work/delays") |"
  done
done
