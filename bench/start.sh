#!/usr/bin/env bash
# Cold start and idle memory: time from exec to "kiln ready" (every socket
# bound, the store open, every machine's config rendered) and kiln's RSS a
# few seconds after, for an inventory of M machines (3 control planes, the
# rest workers), median of RUNS starts. Fresh state_dir each run (so the
# secrets are generated: the slow part of a first start) and a warm one.
#
#   sudo bench/start.sh           (M=1000 RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
M=${M:-1000}; RUNS=${RUNS:-5}
cargo build --release -q
KILN=$PWD/target/release/kiln
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/profiles" "$work/ipxe" "$work/assets"
: > "$work/ipxe/undionly.kpxe"; : > "$work/ipxe/ipxe.efi"
printf 'role: controlplane\ntalos_version: v1.14.0-rc.1\nkernel: http://x/k\ninitramfs: http://x/i\n' > "$work/profiles/cp.yaml"
printf 'role: worker\ntalos_version: v1.14.0-rc.1\nkernel: http://x/k\ninitramfs: http://x/i\n' > "$work/profiles/w.yaml"
{
  echo "machines:"
  for i in $(seq 1 "$M"); do
    p=w; [ "$i" -le 3 ] && p=cp
    printf '  - {mac: "02:00:00:%02x:%02x:%02x", hostname: m-%d, profile: %s}\n' $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) "$i" "$p"
  done
} > "$work/machines.yaml"
cat > "$work/kiln.yaml" <<Y
interface: lo
server_address: 127.0.0.1
ports: {dhcp: 0, proxy_dhcp: 0, tftp: 0, http: 0, events: 0, kmsg: 0}
boot_assets: ./assets
ipxe_dirs: [./ipxe]
state_dir: ./state
clusters:
  lab:
    endpoint: https://10.0.0.5:6443
Y
once() { # $1 = fresh|warm -> "ms rss_kib"
  [ "$1" = fresh ] && rm -rf "$work/state"
  local t0 t1 pid rss
  t0=$(date +%s%N)
  KILN_LOG=info "$KILN" serve --config "$work/kiln.yaml" > "$work/log" 2>&1 &
  pid=$!
  until grep -q "kiln ready" "$work/log"; do
    kill -0 $pid 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s%N)
  sleep 3
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  echo "$(( (t1 - t0) / 1000000 )) $rss"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| start | machines | to ready, ms (median of $RUNS) | idle RSS MiB (median) |"
echo "|---|---|---|---|"
for kind in fresh warm; do
  : > "$work/r"
  for _ in $(seq "$RUNS"); do once $kind >> "$work/r"; done
  ms=$(awk '{print $1}' "$work/r" | median)
  rss=$(awk '{print $2}' "$work/r" | median)
  echo "| $kind state_dir | $M | $ms | $(awk -v r="$rss" 'BEGIN{printf "%.1f", r/1024}') |"
done
