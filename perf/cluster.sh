#!/usr/bin/env bash
# Emulated cluster: N hosts as network namespaces joined by veth pairs to a
# Linux bridge in a "switch" namespace, every port shaped both ways with tc tbf
# (optionally netem delay and loss on the switch side), running COMMAND on
# every host with the rank environment set. Where the kernel has no netem,
# --delay swaps the bridge for a userspace delay switch (cc_delay_switch) whose
# TAP devices become the hosts' eth0. Always tears down: on exit, on
# failure, on INT/TERM/HUP; leftovers of a SIGKILLed run are removed by
# `--cleanup` and by the next run. See docs/cluster.md.
#
# Only addresses inside the namespaces this script creates are used
# (10.77.0.0/24); nothing is configured in the namespace it is started from.
set -euo pipefail

readonly PREFIX=ccl            # namespace names: ccl<pid>-sw, ccl<pid>-h<i>
readonly SUBNET=10.77.0        # host i is 10.77.0.(i+1)/24
readonly SKIP=77               # "cannot run here": ctest's SKIP_RETURN_CODE
readonly ME=cluster.sh

usage() {
  cat <<'EOF'
usage: perf/cluster.sh --hosts N --link RATE [options] -- COMMAND [ARGS...]
       perf/cluster.sh --cleanup

Creates N host namespaces (eth0 = 10.77.0.(i+1)/24) joined to a bridge in a
switch namespace, shapes every port both ways with tc tbf at RATE, runs
COMMAND in every host namespace at once and tears everything down at the end.

  --hosts N          number of hosts (ranks), 1..254
  --link RATE        tc rate of every port, each direction: 100mbit, 1gbit, 10gbit, ...
  --delay DELAY      one-way host-to-host delay added by netem on the switch side (50us, 1ms);
                     without netem, by the userspace delay switch cc_delay_switch (binary:
                     $CC_DELAY_SWITCH, else build/perf/cc_delay_switch of this source tree)
  --loss PCT         packet loss per one-way host-to-host path, percent (0.1 or 0.1%)
  --port PORT        rank 0's port in CC_COMM_ID (default 29500)
  --timeout SECONDS  wall-clock limit of the run; every rank is killed then (default 3600)
  --grace SECONDS    after the first rank fails, how long the others may still run (default 10)
  --burst BYTES      override the tbf bucket size (default: see docs/cluster.md)
  --keep-logs DIR    keep per-rank logs (rank<i>.log) and tc statistics in DIR
  --mtu BYTES        the MTU of every link (default 1500; 9000: jumbo frames, as a switch
                     offload's network would run; the bridge mode only)
  --switchd BIN      also run the aggregation switch BIN (cc_switchd) in the switch namespace,
                     on the bridge's own address 10.77.0.254, so that each host reaches it through
                     its own shaped port only; the ranks get CC_CLUSTER_SWITCH_ADDR=10.77.0.254:PORT
  --switchd-args A   extra cc_switchd options, word-split (e.g. "--loss-up 1 --loss-down 1")
  --cleanup          remove namespaces (and their processes) left by runs that are gone
  -h, --help         this text

Every rank gets CC_RANK=i CC_NRANKS=N CC_COMM_ID=10.77.0.1:PORT
CC_COMM_SECRET=<random, per run> CC_SOCKET_IFNAME=eth0 CC_CLUSTER_HOSTS=N CC_CLUSTER_LINK=RATE
(and CC_CLUSTER_SWITCH_ADDR with --switchd).
Rank 0's output goes to this script's stdout/stderr; the others' go to log
files, whose tail is printed when a rank fails. Exit status: the first
non-zero rank exit status (0 when all succeed), 124 on timeout, 77 when
namespaces or the requested qdiscs (or the delay switch) cannot be set up
here, 2 on bad usage.
EOF
}

say() { echo "$ME: $*" >&2; }
die_usage() { say "$*"; say "try --help"; exit 2; }
skip() { say "cannot run here: $*"; exit "$SKIP"; }

# ---------------------------------------------------------------- parsing ---

# tc rate (bare number = bit/s; kbit, mbit, gbit, tbit; kibit...; bps = bytes/s,
# kbps, mbps, ...) to bits per second, as an integer. Prints nothing if invalid.
rate_to_bits() {
  local s=${1,,} num unit mult
  [[ $s =~ ^([0-9]+(\.[0-9]+)?)([a-z]*)$ ]] || return 1
  num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]}
  case $unit in
    '' | bit) mult=1 ;;
    kbit) mult=1000 ;; mbit) mult=1000000 ;; gbit) mult=1000000000 ;; tbit) mult=1000000000000 ;;
    kibit) mult=1024 ;; mibit) mult=1048576 ;; gibit) mult=1073741824 ;; tibit) mult=1099511627776 ;;
    bps) mult=8 ;;
    kbps) mult=8000 ;; mbps) mult=8000000 ;; gbps) mult=8000000000 ;; tbps) mult=8000000000000 ;;
    kibps) mult=8192 ;; mibps) mult=8388608 ;; gibps) mult=8589934592 ;; tibps) mult=8796093022208 ;;
    *) return 1 ;;
  esac
  awk -v n="$num" -v m="$mult" 'BEGIN { printf "%.0f\n", n * m }'
}

hosts='' link='' delay='' loss='' port=29500 timeout=3600 grace=10 burst='' keep_logs=''
switchd_bin='' switchd_args='' switchd_pid='' switchd_log='' mtu=1500
cleanup_only=0
cmd=()
while (($#)); do
  case $1 in
    --hosts) hosts=${2-}; shift 2 || die_usage "--hosts needs a value" ;;
    --link) link=${2-}; shift 2 || die_usage "--link needs a value" ;;
    --delay) delay=${2-}; shift 2 || die_usage "--delay needs a value" ;;
    --loss) loss=${2-}; shift 2 || die_usage "--loss needs a value" ;;
    --port) port=${2-}; shift 2 || die_usage "--port needs a value" ;;
    --timeout) timeout=${2-}; shift 2 || die_usage "--timeout needs a value" ;;
    --grace) grace=${2-}; shift 2 || die_usage "--grace needs a value" ;;
    --burst) burst=${2-}; shift 2 || die_usage "--burst needs a value" ;;
    --keep-logs) keep_logs=${2-}; shift 2 || die_usage "--keep-logs needs a value" ;;
    --mtu) mtu=${2-}; shift 2 || die_usage "--mtu needs a value" ;;
    --switchd) switchd_bin=${2-}; shift 2 || die_usage "--switchd needs a value" ;;
    --switchd-args) switchd_args=${2-}; shift 2 || die_usage "--switchd-args needs a value" ;;
    --cleanup) cleanup_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; cmd=("$@"); break ;;
    *) die_usage "unknown argument '$1' (the command goes after --)" ;;
  esac
done

if ((!cleanup_only)); then
  if ! [[ $hosts =~ ^[0-9]+$ ]] || ((hosts < 1 || hosts > 254)); then
    die_usage "--hosts must be an integer in 1..254, got '$hosts'"
  fi
  [[ -n $link ]] || die_usage "--link RATE is required (e.g. 1gbit)"
  if ! rate_bits=$(rate_to_bits "$link") || ((rate_bits <= 0)); then
    die_usage "--link: '$link' is not a tc rate (e.g. 100mbit, 1gbit, 10gbit)"
  fi
  if [[ -n $delay ]]; then
    [[ ${delay,,} =~ ^[0-9]+(\.[0-9]+)?(s|sec|secs|ms|msec|msecs|us|usec|usecs)?$ ]] ||
      die_usage "--delay: '$delay' is not a tc time (e.g. 50us, 1ms)"
  fi
  if [[ -n $loss ]]; then
    loss=${loss%\%}
    if ! [[ $loss =~ ^[0-9]+(\.[0-9]+)?$ ]] || ! awk -v p="$loss" 'BEGIN { exit !(p <= 100) }'; then
      die_usage "--loss: '$loss' is not a percentage in 0..100"
    fi
  fi
  if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die_usage "--port: '$port' is not a port"
  fi
  if ! [[ $timeout =~ ^[0-9]+$ ]] || ((timeout < 1)); then
    die_usage "--timeout: '$timeout' is not a positive integer"
  fi
  [[ $grace =~ ^[0-9]+$ ]] || die_usage "--grace: '$grace' is not a non-negative integer"
  if [[ -n $burst ]] && { ! [[ $burst =~ ^[0-9]+$ ]] || ((burst < 1600)); }; then
    die_usage "--burst: '$burst' must be bytes, at least 1600"
  fi
  ((${#cmd[@]})) || die_usage "no command: put it after --"
  if ! [[ $mtu =~ ^[0-9]+$ ]] || ((mtu < 1280 || mtu > 9000)); then
    die_usage "--mtu: '$mtu' is not in 1280..9000"
  fi
  [[ $mtu == 1500 || -z $delay ]] || die_usage "--mtu needs the bridge: it does not combine with --delay"
  if [[ -n $switchd_bin ]]; then
    [[ -x $switchd_bin && ! -d $switchd_bin ]] || die_usage "--switchd: '$switchd_bin' is not an executable"
    [[ -z $delay ]] || die_usage "--switchd needs the bridge: it does not combine with --delay"
  fi
fi

# ------------------------------------------------------------ environment ---

((EUID == 0)) || skip "needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces; running as uid $EUID"
for tool in ip tc setsid awk; do
  command -v "$tool" >/dev/null || skip "'$tool' not found (install iproute2 / util-linux)"
done

# ---------------------------------------------------- namespace lifecycle ---

# True if PID is a live cluster.sh (the owner of namespaces ccl<PID>-*).
owner_alive() {
  local arg
  [[ -r /proc/$1/cmdline ]] || return 1
  while IFS= read -r -d '' arg; do
    [[ ${arg##*/} == "$ME" ]] && return 0
  done <"/proc/$1/cmdline" 2>/dev/null
  return 1
}

# Ends every process inside namespace NS: TERM, up to 2 s to go, then KILL.
kill_ns_procs() {
  local ns=$1 pids tries
  pids=$(ip netns pids "$ns" 2>/dev/null) || return 0
  [[ -n $pids ]] || return 0
  # shellcheck disable=SC2086 # a list of pids
  kill -TERM $pids 2>/dev/null || true
  for ((tries = 0; tries < 20; tries++)); do
    pids=$(ip netns pids "$ns" 2>/dev/null) || return 0
    [[ -n $pids ]] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

# Removes namespaces named ccl<PID>-* whose PID is not a live cluster.sh.
cleanup_stale() {
  local name rest pid removed=0
  while read -r name rest; do
    [[ $name =~ ^${PREFIX}([0-9]+)-(sw|probe|h[0-9]+)$ ]] || continue
    pid=${BASH_REMATCH[1]}
    owner_alive "$pid" && continue
    kill_ns_procs "$name"
    if ip netns del "$name" 2>/dev/null; then
      removed=$((removed + 1))
    else
      say "could not delete stale namespace $name"
    fi
  done < <(ip netns list 2>/dev/null)
  ((removed == 0)) || say "removed $removed stale namespace(s) of earlier runs"
}

if ((cleanup_only)); then
  cleanup_stale
  exit 0
fi
cleanup_stale

# ------------------------------------------------------------- teardown ---

readonly RUN=${PREFIX}$$
readonly SW=$RUN-sw
created=()       # namespaces to delete, in creation order
declare -A live=()   # rank pid -> rank, not yet reaped
timer_pid=''
dsw_pid=''       # the delay switch (delay-switch mode only)
dsw_log=''
logdir=''
remove_logdir=0
torn_down=0

# shellcheck disable=SC2317 # invoked from the traps
teardown() {
  ((torn_down)) && return 0
  torn_down=1
  trap '' INT TERM HUP   # a second Ctrl-C must not stop the cleanup half way
  [[ -z $timer_pid ]] || kill "$timer_pid" 2>/dev/null || true
  local pid ns
  for pid in "${!live[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  if [[ -n $keep_logs && ${#created[@]} -gt 1 ]]; then
    {
      for ns in "${created[@]}"; do
        echo "== $ns"
        tc -n "$ns" -s qdisc show 2>/dev/null | awk '/^qdisc/ { lo = / dev lo / } !lo' || true
      done
    } >"$keep_logs/tc-stats.txt" 2>/dev/null || true
  fi
  if [[ -n $switchd_pid ]]; then
    # SIGTERM: cc_switchd prints its counters and exits.
    kill -TERM "$switchd_pid" 2>/dev/null || true
    wait "$switchd_pid" 2>/dev/null || true
    grep -E '^cc_switchd: rx=' "$switchd_log" 2>/dev/null | tail -n 1 | while IFS= read -r line; do say "$line"; done
    [[ -z $keep_logs ]] || cp -- "$switchd_log" "$keep_logs/switchd.log" 2>/dev/null || true
  fi
  # Hosts first, the switch namespace (and its delay switch) last.
  local i
  for ((i = ${#created[@]} - 1; i >= 0; i--)); do kill_ns_procs "${created[i]}"; done
  if [[ -n $dsw_pid ]]; then
    kill -TERM "$dsw_pid" 2>/dev/null || true
    wait "$dsw_pid" 2>/dev/null || true
    # Its counters: drops and the lateness of the delay.
    grep -E '^cc_delay_switch: (total|lateness)' "$dsw_log" 2>/dev/null | while IFS= read -r line; do say "$line"; done
  fi
  for ns in "${created[@]}"; do
    ip netns del "$ns" 2>/dev/null || say "could not delete namespace $ns (try: $0 --cleanup)"
  done
  created=()
  ((remove_logdir)) && rm -rf -- "$logdir"
  return 0
}
# shellcheck disable=SC2317
on_signal() {
  say "$1: stopping every rank and tearing down"
  exit "$2"   # the EXIT trap tears down
}
trap teardown EXIT
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGHUP 129' HUP

# --------------------------------------------------------------- shaping ---

# The tbf bucket: 1 ms of traffic at the link rate, at least 16 KiB (tbf cannot
# send a packet larger than the bucket; GSO super-packets bigger than it are
# split into MTU segments), at most 4 MiB. The queue (tbf limit): 50 ms at the
# rate, at least 4 MiB, so that no TCP flow is dropped by the sender's own
# qdisc (tcp_limit_output_bytes may let one socket queue up to 4 MiB).
rate_bytes=$(((rate_bits + 7) / 8))
if [[ -z $burst ]]; then
  burst=$((rate_bytes / 1000))
  ((burst >= 16384)) || burst=16384
  ((burst <= 4194304)) || burst=4194304
fi
limit=$((rate_bytes / 20))
((limit >= 4194304)) || limit=4194304
((limit >= burst)) || limit=$burst

loss_mode=none
if [[ -n $loss ]] && awk -v p="$loss" 'BEGIN { exit !(p > 0) }'; then loss_mode=netem; fi

# tc in namespace NS.
ntc() { local ns=$1; shift; tc -n "$ns" "$@"; }

tbf_args() { echo "rate $link burst $burst limit $limit"; }

# Egress of the host's eth0: tbf only.
shape_host() {
  # shellcheck disable=SC2046 # word splitting of the tbf parameters is intended
  ntc "$1" qdisc add dev eth0 root handle 1: tbf $(tbf_args) 2>"$logdir/.tc.err" ||
    skip "tc tbf on eth0 in $1 failed: $(cat "$logdir/.tc.err") (kernel needs CONFIG_NET_SCH_TBF)"
}

# Egress of the bridge-side port DEV: tbf, behind netem when --delay/--loss ask
# for it, so every packet crosses exactly one netem (the one-way path gets the
# delay and the loss once) and the rate still holds (tbf dequeues last).
shape_switch_port() {
  local dev=$1 netem_args=()
  if [[ $loss_mode == bpf ]]; then   # no netem here, and then no --delay either
    shape_switch_port_bpf_loss "$dev"
    return 0
  fi
  [[ -z $delay ]] || netem_args+=(delay "$delay")
  [[ $loss_mode != netem ]] || netem_args+=(loss "$loss%")
  if [[ ${#netem_args[@]} -eq 0 ]]; then
    # shellcheck disable=SC2046
    ntc "$SW" qdisc add dev "$dev" root handle 1: tbf $(tbf_args) 2>"$logdir/.tc.err" ||
      skip "tc tbf on $dev failed: $(cat "$logdir/.tc.err") (kernel needs CONFIG_NET_SCH_TBF)"
    return 0
  fi
  ntc "$SW" qdisc add dev "$dev" root handle 1: netem "${netem_args[@]}" limit 100000 2>"$logdir/.tc.err" ||
    skip "tc netem on $dev failed: $(cat "$logdir/.tc.err") (kernel needs CONFIG_NET_SCH_NETEM)"
  # shellcheck disable=SC2046
  ntc "$SW" qdisc add dev "$dev" parent 1:1 handle 10: tbf $(tbf_args)
}

# Loss without netem (kernels built without sch_netem): an HTB root whose
# classifier, a classic BPF program, draws a random 32-bit number per packet
# and sends it to class 1:20 (a pfifo of limit 0: dropped) when it falls below
# PCT% of 2^32, else to 1:10, the tbf. The HTB classes are far above the link
# rate, so the tbf alone shapes.
shape_switch_port_bpf_loss() {
  local dev=$1 threshold fast
  threshold=$(awk -v p="$loss" 'BEGIN { t = p / 100 * 4294967296; if (t > 4294967295) t = 4294967295; printf "%.0f\n", t }')
  fast=$(awk -v r="$rate_bits" 'BEGIN { printf "%.0fbit\n", r * 4 }')
  ntc "$SW" qdisc add dev "$dev" root handle 1: htb default 10
  ntc "$SW" class add dev "$dev" parent 1: classid 1:10 htb rate "$fast" quantum 60000
  ntc "$SW" class add dev "$dev" parent 1: classid 1:20 htb rate "$fast" quantum 60000
  # shellcheck disable=SC2046
  ntc "$SW" qdisc add dev "$dev" parent 1:10 handle 10: tbf $(tbf_args)
  ntc "$SW" qdisc add dev "$dev" parent 1:20 handle 20: pfifo limit 0
  # ld rand; jge #threshold -> keep (1:10) else drop (1:20)
  # (0x20 = ld [k] with k = SKF_AD_OFF + SKF_AD_RANDOM; 0x35 = jge #k; 6 = ret #k)
  ntc "$SW" filter add dev "$dev" parent 1: protocol all prio 1 bpf \
    bytecode "4,32 0 0 4294963256,53 0 1 $threshold,6 0 0 $((0x10010)),6 0 0 $((0x10020))" 2>"$logdir/.tc.err" ||
    skip "tc bpf classifier on $dev failed: $(cat "$logdir/.tc.err") (kernel needs CONFIG_NET_CLS_BPF)"
}

# ----------------------------------------------------------------- setup ---

if [[ -n $keep_logs ]]; then
  mkdir -p -- "$keep_logs"
  logdir=$(cd -- "$keep_logs" && pwd)
else
  logdir=$(mktemp -d "${TMPDIR:-/tmp}/cc-cluster.XXXXXX")
  remove_logdir=1
fi

# netem is optional in kernels; without it, loss falls back to a BPF
# classifier, and delay to the userspace delay switch (which then also does
# the loss, if any).
switch_mode=bridge
if [[ -n $delay || $loss_mode == netem ]]; then
  if ! ip netns add "$RUN-probe" 2>"$logdir/.ip.err"; then
    skip "'ip netns add' is not permitted: $(cat "$logdir/.ip.err")"
  fi
  have_netem=1
  tc -n "$RUN-probe" qdisc add dev lo root netem delay 1ms 2>/dev/null || have_netem=0
  ip netns del "$RUN-probe"
  if ((!have_netem)); then
    if [[ -n $delay ]]; then
      switch_mode=delay
      [[ $loss_mode == none ]] || loss_mode='delay-switch'
    else
      loss_mode=bpf
    fi
  fi
fi

if [[ $switch_mode == delay ]]; then
  here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
  dsw_bin=${CC_DELAY_SWITCH:-$here/../build/perf/cc_delay_switch}
  [[ -x $dsw_bin && ! -d $dsw_bin ]] ||
    skip "--delay needs the netem qdisc, which this kernel lacks (CONFIG_NET_SCH_NETEM), or the userspace delay switch: '$dsw_bin' is not an executable (build the cc_delay_switch target, or set CC_DELAY_SWITCH=/path/to/cc_delay_switch)"
  [[ -c /dev/net/tun ]] || skip "--delay without netem needs TAP devices: /dev/net/tun is missing (CONFIG_TUN)"
  # The tc time (bare number = microseconds, as in tc) in nanoseconds.
  delay_ns=$(awk -v d="${delay,,}" 'BEGIN {
    n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    m = (u ~ /^s/) ? 1e9 : (u ~ /^ms/) ? 1e6 : 1e3
    printf "%.0f\n", n * m }')
fi

if ! ip netns add "$SW" 2>"$logdir/.ip.err"; then
  skip "'ip netns add' is not permitted: $(cat "$logdir/.ip.err")"
fi
created+=("$SW")
ip -n "$SW" link set lo up
if [[ $switch_mode == bridge ]]; then
  ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  ip -n "$SW" link set br0 up
else
  # The delay switch creates TAP devices h0..h<N-1> in the switch namespace
  # and keeps their file descriptors; each is then moved into its host
  # namespace and becomes eth0 there (the descriptor stays bound to it). It
  # paces every output port at the link rate (the switch-to-host direction,
  # as the tbf behind netem would) with the tbf's bucket and queue limit.
  dsw_ports=$(seq -s, -f 'h%.0f' 0 $((hosts - 1)))
  dsw_args=(--ports "$dsw_ports" --delay-ns "$delay_ns" --rate "$rate_bits" --burst "$burst" --limit "$limit")
  [[ $loss_mode != delay-switch ]] || dsw_args+=(--loss "$loss")
  # Extra options for tuning (e.g. --spin-us 30 --poll-us 200), word-split.
  # shellcheck disable=SC2206
  [[ -z ${CC_DELAY_SWITCH_ARGS:-} ]] || dsw_args+=(${CC_DELAY_SWITCH_ARGS})
  dsw_log=$logdir/delay-switch.log
  ip netns exec "$SW" "$dsw_bin" "${dsw_args[@]}" </dev/null >"$dsw_log" 2>&1 &
  dsw_pid=$!
  for ((tries = 0; tries < 100; tries++)); do
    grep -qx ready "$dsw_log" 2>/dev/null && break
    kill -0 "$dsw_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -qx ready "$dsw_log" 2>/dev/null; then
    msg=$(tail -n 3 -- "$dsw_log" 2>/dev/null | tr '\n' ' ')
    kill -TERM "$dsw_pid" 2>/dev/null || true
    wait "$dsw_pid" 2>/dev/null || true
    dsw_pid=''
    skip "the delay switch ($dsw_bin) did not start: ${msg:-no output}"
  fi
fi

for ((i = 0; i < hosts; i++)); do
  h=$RUN-h$i
  ip netns add "$h"
  created+=("$h")
  ip -n "$h" link set lo up
  # IPv4 only: no link-local IPv6 address for Gloo to pick, no RS/MLD chatter.
  ip netns exec "$h" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 &&
    echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6' 2>/dev/null || true
  if [[ $switch_mode == bridge ]]; then
    ip -n "$SW" link add "h$i" type veth peer name eth0 netns "$h"
    ip -n "$SW" link set "h$i" mtu "$mtu"
    ip -n "$h" link set eth0 mtu "$mtu"
    ip -n "$SW" link set "h$i" master br0
    ip -n "$SW" link set "h$i" up
  else
    ip -n "$SW" link set "h$i" netns "$h"
    ip -n "$h" link set "h$i" name eth0
    # A long TAP queue: the switch reads it, nothing should be dropped there.
    ip -n "$h" link set eth0 mtu 1500 txqueuelen 10000
  fi
  ip -n "$h" addr add "$SUBNET.$((i + 1))/24" dev eth0
  ip -n "$h" link set eth0 up
  shape_host "$h"
  [[ $switch_mode == delay ]] || shape_switch_port "h$i"
done
rm -f -- "$logdir/.tc.err" "$logdir/.ip.err"

# The aggregation switch sits on the bridge itself: its traffic to host i
# leaves through port h<i>'s shaper, and host i's reaches it through its own
# eth0 shaper, as a switch's own dataplane would.
switch_addr=''
if [[ -n $switchd_bin ]]; then
  switchd_port=48864
  ip -n "$SW" addr add "$SUBNET.254/24" dev br0
  ip -n "$SW" link set br0 mtu "$mtu"
  switchd_log=$logdir/switchd.log
  # shellcheck disable=SC2086 # --switchd-args is word-split on purpose
  ip netns exec "$SW" "$switchd_bin" --listen "$SUBNET.254:$switchd_port" $switchd_args </dev/null >"$switchd_log" 2>&1 &
  switchd_pid=$!
  for ((tries = 0; tries < 100; tries++)); do
    grep -qx ready "$switchd_log" 2>/dev/null && break
    kill -0 "$switchd_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -qx ready "$switchd_log" 2>/dev/null; then
    say "cc_switchd did not start: $(tail -n 3 -- "$switchd_log" 2>/dev/null | tr '\n' ' ')"
    switchd_pid=''
    exit 1
  fi
  switch_addr=$SUBNET.254:$switchd_port
fi

say "run $RUN: $hosts host(s) on $SUBNET.0/24, every port $link each way (tbf burst $burst B, limit $limit B, MTU $mtu)${delay:+, delay $delay one way}${loss:+, loss $loss% one way ($loss_mode)}$([[ $switch_mode == bridge ]] || echo ", switch: userspace delay switch (no netem)")${switch_addr:+, cc_switchd at $switch_addr}; logs in $logdir"

# ----------------------------------------------------------------- ranks ---

# The job's bootstrap secret (CC_COMM_SECRET), fresh for every run, so that
# only these ranks can join the store behind CC_COMM_ID.
secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
for ((i = 0; i < hosts; i++)); do
  rank_cmd=(setsid --wait ip netns exec "$RUN-h$i" env
    "CC_RANK=$i" "CC_NRANKS=$hosts" "CC_COMM_ID=$SUBNET.1:$port" "CC_COMM_SECRET=$secret" "CC_SOCKET_IFNAME=eth0"
    "CC_CLUSTER_HOSTS=$hosts" "CC_CLUSTER_LINK=$link" ${switch_addr:+"CC_CLUSTER_SWITCH_ADDR=$switch_addr"}
    "${cmd[@]}")
  if ((i == 0)); then
    "${rank_cmd[@]}" </dev/null &
  else
    "${rank_cmd[@]}" </dev/null >"$logdir/rank$i.log" 2>&1 &
  fi
  live[$!]=$i
done

# A timer that also ends within a second of this script (e.g. after a SIGKILL).
start_timer() {
  local parent=$$
  (
    for ((t = 0; t < $1; t++)); do
      sleep 1
      kill -0 "$parent" 2>/dev/null || exit 0
    done
  ) &
  timer_pid=$!
}
start_timer "$timeout"
status=0
in_grace=0
while ((${#live[@]})); do
  done_pid='' rc=0
  wait -n -p done_pid "${!live[@]}" "$timer_pid" ${dsw_pid:+"$dsw_pid"} || rc=$?
  if [[ -n $dsw_pid && $done_pid == "$dsw_pid" ]]; then
    dsw_pid=''
    say "the delay switch exited (status $rc) while ranks ${live[*]} still run: stopping them"
    say "---- last 20 lines of its log ($dsw_log) ----"
    tail -n 20 -- "$dsw_log" >&2 || true
    ((status != 0)) || status=1
    break
  fi
  if [[ $done_pid == "$timer_pid" ]]; then
    timer_pid=''
    if ((in_grace)); then
      say "ranks ${live[*]} still running $grace s after the first failure: killing them"
    else
      say "timeout: $timeout s passed; killing ranks ${live[*]}"
      status=124
    fi
    break
  fi
  [[ -n $done_pid ]] || { say "lost track of the ranks (wait returned $rc)"; status=${rc:-1}; break; }
  rank=${live[$done_pid]}
  unset "live[$done_pid]"
  ((rc == 0)) && continue
  say "rank $rank exited with status $rc"
  if ((rank != 0)); then
    say "---- last 40 lines of rank $rank's log ($logdir/rank$rank.log) ----"
    tail -n 40 -- "$logdir/rank$rank.log" >&2 || true
    say "---- end of rank $rank's log ----"
  fi
  if ((status == 0)); then
    status=$rc
    if ((${#live[@]})); then
      in_grace=1
      kill "$timer_pid" 2>/dev/null || true
      start_timer "$grace"
    fi
  fi
done
exit "$status"
