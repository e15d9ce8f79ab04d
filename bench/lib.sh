# Shared by the bench scripts (sourced after `set -euo pipefail` and `cd` to
# the repository): two network namespaces joined by a veth pair, torn down
# (with every process in them and the scratch directory $work) on exit.

# bench_namespaces: the namespaces named in NS_S and NS_C (each with a
# resolv.conf of its own, so nothing run inside touches the host's) and the
# scratch directory $work, all torn down on exit.
bench_namespaces() {
  trap bench_cleanup EXIT
  bench_cleanup 2>/dev/null || true
  work=$(mktemp -d)
  for ns in $NS_S $NS_C; do
    mkdir -p /etc/netns/$ns; echo "# bench" > /etc/netns/$ns/resolv.conf
    ip netns add $ns; ip -n $ns link set lo up
  done
}

# bench_pair NS_S NS_C IF_S IF_C ADDR_S/LEN ADDR_C/LEN: sets NS_S, NS_C, work.
bench_pair() {
  NS_S=$1; NS_C=$2
  bench_namespaces
  ip link add "$3" type veth peer name "$4"
  ip link set "$3" netns $NS_S; ip link set "$4" netns $NS_C
  ip -n $NS_S addr add "$5" dev "$3"; ip -n $NS_S link set "$3" up
  ip -n $NS_C addr add "$6" dev "$4"; ip -n $NS_C link set "$4" up
}

bench_cleanup() {
  # etcd (etcd_up) runs in the host's namespace.
  for f in "${work:-/nonexistent}"/etcd/*.pid; do
    [ -s "$f" ] && { kill -9 "$(cat "$f")" 2>/dev/null || true; }
  done
  # Put back the host's neighbour table limits (neigh_room).
  if [ -s "${work:-/nonexistent}/neigh" ]; then
    while read -r k v; do sysctl -qw "$k=$v" || true; done < "$work/neigh"
  fi
  for ns in $NS_S $NS_C; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
    rm -rf /etc/netns/$ns
  done
  rm -rf "${work:-/nonexistent}"
}

# stop_server [GRACE seconds, default 1]: TERM, then KILL, everything in $NS_S.
stop_server() {
  for p in $(ip netns pids $NS_S); do kill $p 2>/dev/null || true; done
  sleep "${1:-1}"
  for p in $(ip netns pids $NS_S); do kill -9 $p 2>/dev/null || true; done
}

# median of the numbers on stdin, one per line ("-" for none).
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else print a[int((NR+1)/2)]}'; }

# neigh_room N: room for N neighbours (one per simulated machine). Linux keeps
# at most gc_thresh3 (1,024 by default) and that limit is the host's, not a
# namespace's: past it the server's sends to new clients fail with "neighbor
# table overflow" (dmesg). Raised for the run, put back by bench_cleanup.
neigh_room() {
  local n=$1 k
  for k in gc_thresh1 gc_thresh2 gc_thresh3; do
    echo "net.ipv4.neigh.default.$k $(sysctl -n net.ipv4.neigh.default.$k)" >> "$work/neigh"
  done
  sysctl -qw net.ipv4.neigh.default.gc_thresh1=$((n + 1024)) \
    net.ipv4.neigh.default.gc_thresh2=$((2 * n + 2048)) \
    net.ipv4.neigh.default.gc_thresh3=$((4 * n + 4096))
}

# etcd_up: a 3-member etcd (Debian's etcd-server) on unix sockets under
# $work/etcd (reachable from every namespace); sets ETCD_ENDPOINTS (a YAML
# list) and defines etcd_ctl MEMBER ARGS... Stopped by bench_cleanup.
etcd_up() {
  command -v etcd >/dev/null && command -v etcdctl >/dev/null ||
    { echo "needs etcd and etcdctl (Debian etcd-server, etcd-client)" >&2; exit 1; }
  local e=$work/etcd m initial
  mkdir -p "$e"
  initial=$(for m in e1 e2 e3; do printf '%s=unix://%s.peer:0,' $m $m; done); initial=${initial%,}
  for m in e1 e2 e3; do
    (cd "$e" && exec etcd --name $m --data-dir "$e/$m" \
       --listen-client-urls unix://$m.client:0 --advertise-client-urls unix://$m.client:0 \
       --listen-peer-urls unix://$m.peer:0 --initial-advertise-peer-urls unix://$m.peer:0 \
       --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token kiln-bench \
       > "$e/$m.log" 2>&1) &
    echo $! > "$e/$m.pid"
  done
  for _ in $(seq 150); do etcd_ctl e1 put health ok >/dev/null 2>&1 && break; sleep 0.2; done
  ETCD_ENDPOINTS="[unix://$e/e1.client:0, unix://$e/e2.client:0, unix://$e/e3.client:0]"
}
etcd_ctl() { etcdctl --endpoints "unix://$work/etcd/$1.client:0" --command-timeout=3s "${@:2}"; }
