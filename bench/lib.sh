# Shared by the bench scripts (sourced after `set -euo pipefail` and `cd` to
# the repository): two network namespaces joined by a veth pair, torn down
# (with every process in them and the scratch directory $work) on exit.

# bench_pair NS_S NS_C IF_S IF_C ADDR_S/LEN ADDR_C/LEN: sets NS_S, NS_C, work.
bench_pair() {
  NS_S=$1; NS_C=$2
  trap bench_cleanup EXIT
  bench_cleanup 2>/dev/null || true
  work=$(mktemp -d)
  for ns in $NS_S $NS_C; do
    mkdir -p /etc/netns/$ns; echo "# bench" > /etc/netns/$ns/resolv.conf
    ip netns add $ns; ip -n $ns link set lo up
  done
  ip link add "$3" type veth peer name "$4"
  ip link set "$3" netns $NS_S; ip link set "$4" netns $NS_C
  ip -n $NS_S addr add "$5" dev "$3"; ip -n $NS_S link set "$3" up
  ip -n $NS_C addr add "$6" dev "$4"; ip -n $NS_C link set "$4" up
}

bench_cleanup() {
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
