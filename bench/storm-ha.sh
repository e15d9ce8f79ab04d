#!/usr/bin/env bash
# Boot storm against two kiln daemons sharing one state through a 3-member
# etcd (Debian's etcd-server, over unix sockets): daemons a (10.95.0.1) and b
# (10.95.0.2), each in its own namespace, and the simulated machines
# (bench/storm) on one bridge with them. Each machine boots from whichever
# daemon answered its DHCP (the RFC 3074 split). At the end: every machine
# ready, 0 duplicate addresses in kiln's shared view and in the clients'.
#
#   bench/storm-ha.sh                 N=1000 RAMP=10
#   KILL=1 bench/storm-ha.sh          kill -9 daemon b at a random moment of
#                                     the storm (not restarted): a's takeover
#                                     must finish the storm; machines whose
#                                     boot stalls on b boot again from DHCP
#   LEADER=1 bench/storm-ha.sh        kill the etcd leader mid-storm
#   PROFILE=debug ...                 debug binaries (tests/ha_storm.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}; RAMP=${RAMP:-10}; KILL=${KILL:-0}; LEADER=${LEADER:-0}
[ -s /usr/lib/ipxe/undionly.kpxe ] || { echo "needs Debian's ipxe package" >&2; exit 1; }
. bench/lib.sh

NS_S="ks-a ks-b"; NS_C=ks-cli
bench_namespaces
ip -n $NS_C link add ksbr type bridge
ip -n $NS_C addr add 10.95.255.254/16 dev ksbr
ip -n $NS_C link set ksbr up
for x in a b; do
  ip link add k${x}0 type veth peer name k${x}1
  ip link set k${x}0 netns ks-$x; ip link set k${x}1 netns $NS_C
  ip -n $NS_C link set k${x}1 master ksbr up
  ip -n ks-$x link set k${x}0 up
done
ip -n ks-a addr add 10.95.0.1/16 dev ka0
ip -n ks-b addr add 10.95.0.2/16 dev kb0
# Bridged frames skip the host's netfilter (br_netfilter, where loaded, is per
# namespace): the storm measures kiln, not conntrack.
ip netns exec $NS_C sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
ip netns exec $NS_C sysctl -qw net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
[ "$N" -le 500 ] || neigh_room "$N"  # the host's table is big enough below

PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release -q -p kiln -p kiln-storm
else cargo build -q -p kiln -p kiln-storm; PROFILE=debug; fi
KILN=$PWD/target/$PROFILE/kiln
STORM=$PWD/target/$PROFILE/kiln-storm

etcd_up
# One key for both: the cluster secrets the first daemon makes are sealed in etcd.
"$KILN" store keygen "$work/secrets.key" > /dev/null

for x in a b; do
  d=$work/kiln-$x
  mkdir -p "$d/profiles" "$d/assets/talos/v1.13.9"
  printf 'role: worker\ntalos_version: v1.13.9\ninstall_disk: /dev/sda\n' > "$d/profiles/worker.yaml"
  printf 'machines: []\n' > "$d/machines.yaml"
  head -c 1048576 /dev/urandom > "$d/assets/talos/v1.13.9/vmlinuz-amd64"
  head -c 1048576 /dev/urandom > "$d/assets/talos/v1.13.9/initramfs-amd64.xz"
  addr=10.95.0.1; [ $x = b ] && addr=10.95.0.2
  cat > "$d/kiln.yaml" <<Y
interface: k${x}0
server_address: $addr
boot_assets: ./assets
ipxe_dirs: [/usr/lib/ipxe]
state_dir: ./state
unknown_machines: boot
default_profile: worker
dhcp: {mode: full, subnet: 10.95.0.0/16, range: [10.95.1.0, 10.95.250.255], lease_time: 1h}
store: {backend: etcd, endpoints: $ETCD_ENDPOINTS, prefix: /kiln, daemon: $x, secrets_key: $work/secrets.key}
clusters:
  storm:
    endpoint: https://10.95.0.5:6443
Y
done
start() { # start daemon $1, wait for its DHCP socket; pid in $work/pid-$1
  local d=$work/kiln-$1
  (cd "$d" && KILN_LOG=warn exec ip netns exec ks-$1 "$KILN" serve --config kiln.yaml >> "$work/kiln-$1.log" 2>&1 < /dev/null) &
  for _ in $(seq 1200); do
    ip netns exec ks-$1 ss -lun | grep -q ':67 ' && break
    sleep 0.1
  done
  ip netns pids ks-$1 | head -1 > "$work/pid-$1"
}
usage() { # peak RSS (MiB) and CPU seconds of pid
  awk '/VmHWM/{printf "%.1f ", $2/1024}' /proc/$1/status
  awk -v t="$(getconf CLK_TCK)" '{printf "%.1f\n", ($14+$15)/t}' /proc/$1/stat
}
start a
[ "${DAEMONS:-2}" = 1 ] || start b  # DAEMONS=1: a alone on the same bridge (a baseline)
[ "${DAEMONS:-2}" = 1 ] || cmp -s "$work/kiln-a/state/storm/secrets.yaml" "$work/kiln-b/state/storm/secrets.yaml" ||
  { echo "the daemons hold different cluster secrets" >&2; exit 1; }
# Both liveness keys up before the storm, so the split is even from the start.
for _ in $(seq 50); do [ "$(etcd_ctl e1 get --prefix --keys-only /kiln/daemons/ | grep -c .)" = "${DAEMONS:-2}" ] && break; sleep 0.2; done
echo "daemons a $(cat "$work/pid-a"), b $(cat "$work/pid-b"); storm of $N machines over ${RAMP}s$( [ "$KILL" = 1 ] && echo ', b killed -9 mid-storm')$( [ "$LEADER" = 1 ] && echo ', the etcd leader killed mid-storm')"

faults=()
at=$(awk -v r="$RAMP" 'BEGIN{srand(); printf "%.1f", 1 + rand()*r}')
if [ "$KILL" = 1 ]; then
  pb=$(cat "$work/pid-b")
  ( trap - EXIT; sleep "$at"; echo "b: peak RSS MiB, CPU s: $(usage "$pb"); killed -9 at ${at}s" >&2; kill -9 "$pb" ) &
  faults+=($!)
fi
if [ "$LEADER" = 1 ]; then
  ( trap - EXIT; sleep "$(awk -v a="$at" 'BEGIN{print a/2}')"
    for m in e1 e2 e3; do
      if etcd_ctl $m endpoint status -w json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then
        kill -9 "$(cat "$work/etcd/$m.pid")"; echo "etcd leader $m killed" >&2; break
      fi
    done ) &
  faults+=($!)
fi
set +e
ip netns exec $NS_C "$STORM" --iface ksbr --machines "$N" --ramp "$RAMP" --reboot-after 10 --out "$work/storm.json"
rc=$?
set -e
for f in "${faults[@]}"; do wait "$f" || true; done
echo
for x in a b; do
  p=$(cat "$work/pid-$x" 2>/dev/null || echo 0)
  [ -e "/proc/$p" ] && echo "kiln $x: peak RSS MiB, CPU s: $(usage "$p")"
  echo "kiln $x: $(grep -c 'not answering' "$work/kiln-$x.log" || true) 'not answering' log lines (rate limited)"
done
echo "etcd (3 members, alive ones): CPU s $(for f in "$work"/etcd/*.pid; do p=$(cat "$f"); [ -e /proc/$p ] && awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' /proc/$p/stat; done | awk '{s+=$1} END {printf "%.1f", s}')"
# kiln's shared view (through a, which lives in every mode): every machine
# ready, each address held by one MAC, as each client was ACKed.
ip netns exec ks-a "$KILN" machines --output json --config "$work/kiln-a/kiln.yaml" > "$work/machines.json"
# Kept for a look afterwards: OUT=dir.
[ -n "${OUT:-}" ] && cp "$work/storm.json" "$work/machines.json" "$work"/kiln-*.log "$OUT"/
python3 bench/check_storm.py "$work/machines.json" "$work/storm.json" "$N"
exit $rc
