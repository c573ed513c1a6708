#!/usr/bin/env bash
# End-to-end allreduce on the emulated cluster: 3 hosts (network namespaces)
# behind a bridge, every port shaped to 1 Gbit/s each way (perf/cluster.sh),
# one cc_allreduce_perf rank per host.
#
# usage: tests/cluster_test.sh PATH/TO/cc_allreduce_perf
# exit: 0 passed, 77 skipped (cannot create namespaces here: says why), else failed.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
cluster=$here/../perf/cluster.sh
perf=${1:?usage: cluster_test.sh PATH/TO/cc_allreduce_perf}

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ -x $perf ]] || fail "$perf is not an executable"
[[ -x $cluster ]] || fail "$cluster is not an executable"

# Namespaces need root; say so plainly instead of failing half way.
((EUID == 0)) || skip "the emulated cluster needs root (network namespaces, tc); running as uid $EUID"
probe=ccl$$-probe
if ! err=$(ip netns add "$probe" 2>&1); then
  skip "cannot create a network namespace here: ${err:-ip netns add failed}"
fi
ip netns del "$probe" 2>/dev/null || true

args=(-b 1M -e 1M -n 2 -w 1)
verify=0
help=$("$perf" --help 2>&1 || true)
if [[ $help == *--verify* ]]; then
  args+=(--verify)
  verify=1
fi

out=$(mktemp)
trap 'rm -f -- "$out"' EXIT
rc=0
"$cluster" --hosts 3 --link 1gbit --timeout 500 -- "$perf" "${args[@]}" | tee "$out" || rc=$?
((rc != 77)) || skip "perf/cluster.sh could not build the emulated cluster here (its message is above)"
((rc == 0)) || fail "the 3-host cluster run exited with status $rc"

# The table has a nat row (a row, not a # comment, with a field "nat").
awk '!/^#/ { for (i = 1; i <= NF; i++) if ($i == "nat") found = 1 } END { exit !found }' "$out" ||
  fail "no nat row in cc_allreduce_perf's table"
if ((verify)); then
  echo "PASS: 3 hosts x 1gbit, cc_allreduce_perf --verify succeeded on every rank"
else
  echo "PASS: 3 hosts x 1gbit, every rank exited 0 and the table has a nat row (this cc_allreduce_perf has no --verify)"
fi
