#!/usr/bin/env bash
# Boot storm: N simulated machines (bench/storm, default 1000) power on within
# RAMP seconds and do the whole first boot against one kiln (full DHCP mode,
# unknown machines booted as workers): DHCP as PXE, TFTP undionly.kpxe, DHCP
# as iPXE, boot script + machine script, config, events. Reports per-step
# p50/p99, errors, duplicate addresses, kiln's peak RSS (VmHWM) and CPU time.
#
#   sudo bench/storm.sh                 (N=1000 RAMP=10)
#   sudo CHURN=10 bench/storm.sh        10 % of machines DECLINE a first lease
#                                       and 10 % RELEASE one before booting
#   sudo PING=300ms bench/storm.sh      with dhcp.ping_check (its cost: every
#                                       fresh OFFER waits for the ping)
#   sudo WRAP="valgrind --tool=massif --massif-out-file=/tmp/m.out" bench/storm.sh
#                                       run kiln under a wrapper (a heap profile)
#   sudo KILL=1 bench/storm.sh          kill -9 kiln at a random moment of the
#                                       storm and restart it; the storm must
#                                       still complete with no lease lost or
#                                       duplicated and every machine ready.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}; RAMP=${RAMP:-10}; KILL=${KILL:-0}
. bench/lib.sh
bench_pair ks-srv ks-cli ks0 ks1 10.95.0.1/16 10.95.255.254/16
neigh_room "$N"

cargo build --release -q -p kiln -p kiln-storm
KILN=$PWD/target/release/kiln
STORM=$PWD/target/release/kiln-storm
[ -s /usr/lib/ipxe/undionly.kpxe ] || { echo "needs Debian's ipxe package" >&2; exit 1; }

d=$work/kiln
mkdir -p "$d/profiles" "$d/assets/talos/v1.13.9"
printf 'role: worker\ntalos_version: v1.13.9\ninstall_disk: /dev/sda\n' > "$d/profiles/worker.yaml"
printf 'machines: []\n' > "$d/machines.yaml"
head -c 1048576 /dev/urandom > "$d/assets/talos/v1.13.9/vmlinuz-amd64"
head -c 1048576 /dev/urandom > "$d/assets/talos/v1.13.9/initramfs-amd64.xz"
cat > "$d/kiln.yaml" <<Y
interface: ks0
server_address: 10.95.0.1
boot_assets: ./assets
ipxe_dirs: [/usr/lib/ipxe]
state_dir: ./state
unknown_machines: boot
default_profile: worker
dhcp: {mode: full, subnet: 10.95.0.0/16, range: [10.95.1.0, 10.95.250.255], lease_time: 1h${PING:+, ping_check: $PING}}
clusters:
  storm:
    endpoint: https://10.95.0.5:6443
Y
start() { # writes kiln's pid to $work/pid
  (cd "$d" && KILN_LOG=warn exec ip netns exec $NS_S ${WRAP:-} "$KILN" serve --config kiln.yaml >> "$work/kiln.log" 2>&1 < /dev/null) &
  for _ in $(seq 1200); do
    ip netns exec $NS_S ss -lun | grep -q ':67 ' && break
    sleep 0.1
  done
  ip netns pids $NS_S | head -1 > "$work/pid"
}
usage() { # peak RSS (MiB) and CPU seconds of pid
  awk '/VmHWM/{printf "%.1f ", $2/1024}' /proc/$1/status
  awk -v t="$(getconf CLK_TCK)" '{printf "%.1f\n", ($14+$15)/t}' /proc/$1/stat
}
start; pid=$(cat "$work/pid")
echo "kiln pid $pid; storm of $N machines over ${RAMP}s$( [ "$KILL" = 1 ] && echo ', with a kill -9')"
killer=
if [ "$KILL" = 1 ]; then
  at=$(awk -v r="$RAMP" 'BEGIN{srand(); printf "%.1f", 1 + rand()*r}')
  ( trap - EXIT; sleep "$at"; u=$(usage "$pid"); kill -9 "$pid"
    # As systemd does, restart once the old process is gone (its lock with it).
    while [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do sleep 0.05; done
    echo "killed kiln -9 at ${at}s (peak RSS MiB, CPU s so far: $u)" >&2;
    start; cp "$work/pid" "$work/pid2"; echo "restarted as $(cat "$work/pid2")" >&2 ) &
  killer=$!
fi
set +e
ip netns exec $NS_C "$STORM" --iface ks1 --machines "$N" --ramp "$RAMP" --churn "${CHURN:-0}" --out "$work/storm.json"
rc=$?
set -e
[ -n "$killer" ] && wait "$killer"
[ -s "$work/pid2" ] && pid=$(cat "$work/pid2")
echo
echo "kiln (last incarnation): peak RSS MiB, CPU s: $(usage "$pid")"
# kiln's own view: every machine ready, each address held by one MAC.
ip netns exec $NS_S "$KILN" machines --output json --config "$d/kiln.yaml" > "$work/machines.json"
python3 bench/check_storm.py "$work/machines.json" "$work/storm.json" "$N"
# A wrapped kiln (a profiler) gets TERM and time to write its output.
if [ -n "${WRAP:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; sleep 20; fi
exit $rc
