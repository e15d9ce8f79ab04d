#!/usr/bin/env bash
# TFTP benchmark: kiln vs tftpd-hpa vs dnsmasq serving ipxe.efi (850 KB),
# N fetches, P at a time, blksize 1468, with atftp, over a veth pair between two
# namespaces. Prints a Markdown table of wall time and MB/s (3 runs, median).
#
#   sudo bench/tftp.sh            (N=200 P=20; env N, P, RUNS override)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}; P=${P:-20}; RUNS=${RUNS:-3}
. bench/lib.sh
bench_pair kt-srv kt-cli kt0 kt1 10.97.0.1/24 10.97.0.2/24

mkdir -p "$work/root" "$work/out"
cp -L /usr/lib/ipxe/ipxe.efi "$work/root/ipxe.efi"
size=$(stat -c %s "$work/root/ipxe.efi")
cargo build --release -q
KILN=$PWD/target/release/kiln

start_kiln() {
  mkdir -p "$work/k/profiles"
  printf 'role: worker\ntalos_version: v1.13.9\nkernel: http://x/k\ninitramfs: http://x/i\n' > "$work/k/profiles/w.yaml"
  printf 'machines: []\n' > "$work/k/machines.yaml"
  printf 'interface: kt0\nserver_address: 10.97.0.1\nboot_assets: %s\nipxe_dirs: [%s]\nstate_dir: ./state\n' "$work/root" "$work/root" > "$work/k/kiln.yaml"
  printf 'undionly' > "$work/root/undionly.kpxe"
  KILN_LOG=warn ip netns exec $NS_S "$KILN" serve --config "$work/k/kiln.yaml" > "$work/kiln.log" 2>&1 &
  sleep 1.5
}
start_tftpd() {
  ip netns exec $NS_S in.tftpd --foreground --listen --address 10.97.0.1:69 --secure "$work/root" > "$work/tftpd.log" 2>&1 &
  sleep 1
}
start_dnsmasq() {
  ip netns exec $NS_S dnsmasq --no-daemon --port=0 --enable-tftp --tftp-root="$work/root" --interface=kt0 --bind-interfaces --conf-file=/dev/null > "$work/dnsmasq.log" 2>&1 &
  sleep 1
}

fetch_all() {
  rm -f "$work/out"/*
  seq 1 "$N" | xargs -P "$P" -I{} ip netns exec $NS_C atftp --option "blksize 1468" -g -r ipxe.efi -l "$work/out/{}" 10.97.0.1 69 2>/dev/null
  ok=0
  for f in "$work/out"/*; do [ "$(stat -c %s "$f")" = "$size" ] && ok=$((ok+1)); done
  echo "$ok"
}

echo "| server | fetches ok | wall s (median of $RUNS) | MB/s |"
echo "|---|---|---|---|"
for server in kiln tftpd dnsmasq; do
  times=()
  ok=0
  for r in $(seq 1 "$RUNS"); do
    start_$server
    t0=$(date +%s.%N)
    ok=$(fetch_all)
    t1=$(date +%s.%N)
    stop_server 0.5
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS+1)/2 ))p")
  mbs=$(echo "$N * $size / 1000000 / $med" | bc -l)
  printf '| %s | %s/%s | %.2f | %.1f |\n' "$server" "$ok" "$N" "$med" "$mbs"
done
