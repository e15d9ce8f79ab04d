#!/usr/bin/env bash
# Long fuzzing runs of kiln's input surfaces (stable Rust: proptest, no nightly):
#  - DHCP packet decoding, arbitrary bytes and arbitrary options (src/dhcp/packet.rs)
#  - every listening port of a running kiln (tests/fuzz_surfaces.rs): DHCP,
#    proxyDHCP and TFTP datagrams, HTTP requests and raw bytes, gRPC bytes;
#    kiln must not panic (its log is checked) and must keep serving.
# Usage: bench/fuzz.sh [SECONDS per target, default 300] [CASES, default 200000]
# A failing input is shrunk and saved by proptest (proptest-regressions/,
# tests/regressions/): commit it and it is replayed by every `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
cases=${2:-200000}
cargo build --release --tests -q 2>/dev/null || cargo build --tests -q
status=0
run() {
  local what=$1; shift
  echo "== $what ($secs s max, up to $cases cases)"
  local t0=$SECONDS
  timeout --signal=INT "$secs" "$@"
  local rc=$?
  # 124/130: stopped by the time bound, which is the expected way to end.
  case $rc in
    0) echo "   all cases passed in $((SECONDS - t0)) s" ;;
    124|130) echo "   no failure in $((SECONDS - t0)) s (time bound reached)" ;;
    *) echo "   FAILED (exit $rc)"; status=1 ;;
  esac
}
PROPTEST_CASES=$cases run "DHCP decode" cargo test -q --lib dhcp::packet -- arbitrary
KILNTEST_FUZZ_CASES=$cases run "every port of a running kiln" cargo test -q --test fuzz_surfaces
exit $status
