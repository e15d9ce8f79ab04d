#!/usr/bin/env bash
# HTTP benchmark: kiln vs nginx serving the same directory, one after the other,
# on the same veth pair between two network namespaces. 50 concurrent clients
# (curl --parallel) each download a generated 100 MiB "initramfs"; reported:
# aggregate throughput and the server's peak RSS (sampled every 100 ms; nginx:
# master + workers), median over RUNS runs.
#
#   sudo bench/http.sh            (CLIENTS=50 SIZE_MB=100 RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-50}
SIZE_MB=${SIZE_MB:-100}
RUNS=${RUNS:-3}
. bench/lib.sh
bench_pair kh-srv kh-cli kh0 kh1 10.96.0.1/24 10.96.0.2/24

cargo build --release -q
KILN=$PWD/target/release/kiln
assets=$work/assets/talos/v1.13.9
mkdir -p "$assets"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$assets/initramfs-amd64.xz"
: > "$assets/vmlinuz-amd64"

start_kiln() {
  mkdir -p "$work/kiln/profiles" "$work/kiln/ipxe"
  printf 'role: worker\ntalos_version: v1.13.9\n' > "$work/kiln/profiles/worker.yaml"
  printf 'machines: []\n' > "$work/kiln/machines.yaml"
  : > "$work/kiln/ipxe/undionly.kpxe"; : > "$work/kiln/ipxe/ipxe.efi"
  cat > "$work/kiln/kiln.yaml" <<Y
interface: kh0
server_address: 10.96.0.1
ipxe_dirs: [./ipxe]
boot_assets: $work/assets
state_dir: ./state
ports: {dhcp: 6767, proxy_dhcp: 4011, tftp: 6969, http: 8080}
Y
  KILN_LOG=warn ip netns exec $NS_S "$KILN" serve --config "$work/kiln/kiln.yaml" > "$work/kiln.log" 2>&1 &
  sleep 1.5
  url=http://10.96.0.1:8080/assets/talos/v1.13.9/initramfs-amd64.xz
}
start_nginx() {
  cat > "$work/nginx.conf" <<N
user root;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  server { listen 10.96.0.1:8081; root $work/assets; }
}
N
  ip netns exec $NS_S nginx -c "$work/nginx.conf" -g 'daemon off;' > "$work/nginx.log" 2>&1 &
  sleep 1
  url=http://10.96.0.1:8081/talos/v1.13.9/initramfs-amd64.xz
}
rss_kb() { # total VmRSS of the server namespace's processes
  local t=0
  for p in $(ip netns pids $NS_S); do
    r=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0); t=$((t + ${r:-0}))
  done
  echo $t
}

echo "| server | clients x size | throughput MiB/s (median of $RUNS) | idle RSS MiB | peak RSS MiB (median) | complete |"
echo "|---|---|---|---|---|---|"
for server in kiln nginx; do
  : > "$work/tp"; : > "$work/peak"; ok=yes
  for run in $(seq "$RUNS"); do
    start_$server
    idle=$(rss_kb)
    # curl caps --parallel-max at 300: 250 transfers per curl process.
    per=$(( CLIENTS < 250 ? CLIENTS : 250 ))
    args=()
    for i in $(seq "$per"); do args+=(-o /dev/null "$url"); done
    peak=0
    ( while sleep 0.1; do rss_kb; done ) > "$work/rss" &
    sampler=$!
    t0=$(date +%s.%N)
    : > "$work/sizes"; pids=()
    for c in $(seq $(( (CLIENTS + per - 1) / per ))); do
      ip netns exec $NS_C curl -sS --no-progress-meter --fail --parallel --parallel-max "$per" -w '%{size_download}\n' "${args[@]}" >> "$work/sizes" 2>> "$work/curl.err" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || ok=no; done
    t1=$(date +%s.%N)
    kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
    peak=$(sort -n "$work/rss" | tail -1)
    stop_server
    got=$(awk '{s+=$1} END {printf "%.0f", s}' "$work/sizes")
    [ "$got" -eq $(( (CLIENTS + per - 1) / per * per * SIZE_MB * 1024 * 1024)) ] || ok="no ($got bytes)"
    echo "$t0 $t1 $got" | awk '{printf "%.0f\n", $3/1048576/($2-$1)}' >> "$work/tp"
    echo "${peak:-0}" | awk '{printf "%.1f\n", $1/1024}' >> "$work/peak"
  done
  echo "| $server | $CLIENTS x $SIZE_MB MiB | $(median < "$work/tp") | $(echo "$idle" | awk '{printf "%.1f", $1/1024}') | $(median < "$work/peak") | $ok |"
done
