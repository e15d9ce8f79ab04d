#!/usr/bin/env bash
# Long fuzzing runs of kiln's input surfaces (stable Rust: proptest, no nightly):
#  - DHCP packet decoding, arbitrary bytes and arbitrary options (src/dhcp/packet.rs)
#  - every listening port of a running kiln (tests/fuzz_surfaces.rs): DHCP,
#    proxyDHCP and TFTP datagrams, HTTP requests and raw bytes, gRPC bytes;
#    kiln must not panic (its log is checked) and must keep serving.
# Each target is run again and again (fresh random seeds) for SECONDS.
# Usage: bench/fuzz.sh [SECONDS per target, default 300] [CASES per round, default 20000]
# A failing input is shrunk and saved by proptest (proptest-regressions/,
# tests/regressions/): commit it and every `cargo test` replays it.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
cases=${2:-20000}
cargo test -q --no-run --lib --test fuzz_surfaces 2>/dev/null
status=0
run() {
  local what=$1; shift
  local t0=$SECONDS rounds=0
  echo "== $what: rounds of $cases cases for $secs s"
  while [ $((SECONDS - t0)) -lt "$secs" ]; do
    if ! "$@" > /tmp/kiln-fuzz.log 2>&1; then
      echo "   FAILED in round $((rounds + 1)); see /tmp/kiln-fuzz.log"; status=1; return
    fi
    rounds=$((rounds + 1))
  done
  echo "   $rounds rounds ($((rounds * cases)) cases per property), no failure, $((SECONDS - t0)) s"
}
PROPTEST_CASES=$cases run "DHCP decode" cargo test -q --lib dhcp::packet -- arbitrary
KILNTEST_FUZZ_CASES=$cases run "every port of a running kiln" cargo test -q --test fuzz_surfaces
exit $status
