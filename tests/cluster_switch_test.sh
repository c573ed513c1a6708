#!/usr/bin/env bash
# The switch on the emulated cluster: 3 hosts (network namespaces) behind a
# bridge, every port shaped to 1 Gbit/s each way, cc_switchd on the bridge's
# own address (perf/cluster.sh --switchd, started by cc_allreduce_perf
# --switch), 1% of its packets dropped each way by its loss injection. Every
# switch row must verify: bit-identical on every rank, error within bound.
#
# usage: tests/cluster_switch_test.sh PATH/TO/cc_allreduce_perf PATH/TO/cc_switchd
# exit: 0 passed, 77 skipped (cannot create namespaces here: says why), else failed.
set -euo pipefail

perf=${1:?usage: cluster_switch_test.sh PATH/TO/cc_allreduce_perf PATH/TO/cc_switchd}
switchd=${2:?usage: cluster_switch_test.sh PATH/TO/cc_allreduce_perf PATH/TO/cc_switchd}

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ -x $perf ]] || fail "$perf is not an executable"
[[ -x $switchd ]] || fail "$switchd is not an executable"
((EUID == 0)) || skip "the emulated cluster needs root (network namespaces, tc); running as uid $EUID"
probe=ccl$$-probe
if ! err=$(ip netns add "$probe" 2>&1); then
  skip "cannot create a network namespace here: ${err:-ip netns add failed}"
fi
ip netns del "$probe" 2>/dev/null || true

out=$(mktemp)
trap 'rm -f -- "$out"' EXIT
rc=0
CC_SWITCHD=$switchd "$perf" --cluster 3 --link 1gbit --switch --switch-loss 1 --no-gloo --algo ring \
  --codec nat,none -b 4M -e 4M -n 2 -w 1 --verify 2>&1 | tee "$out" || rc=$?
((rc != 77)) || skip "perf/cluster.sh could not build the emulated cluster here (its message is above)"
((rc == 0)) || fail "the 3-host switch run exited with status $rc"
for want in "nat switch" "nat switch-i32" "none switch"; do
  read -r codec algo <<<"$want"
  awk -v c="$codec" -v a="$algo" '!/^#/ && $5 == c && $6 == a { found = 1 } END { exit !found }' "$out" ||
    fail "no row for codec $codec on $algo in cc_allreduce_perf's table"
done
grep -q 'loss_up=[1-9]' "$out" || fail "the daemon's counters show no injected loss"
grep -q '# verify: passed' "$out" || fail "cc_allreduce_perf did not verify"
echo "PASS: 3 hosts x 1gbit, switch rows (nat, nat/int32, int32) bit-identical and within bound under 1% loss each way"
