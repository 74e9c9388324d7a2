#!/usr/bin/env bash
# testbed.sh - multi-host test bed for vdi-gateway (see docs/testbed.md).
#
# Each "host" is a systemd-nspawn container booting real systemd + journald
# (sshd, haproxy, keepalived inside) in its own network namespace; all
# namespaces hang off a bridge that lives in a namespace of its own.
# The root network namespace is never touched. Run as root.
set -euo pipefail

readonly SUITE=bookworm
readonly BASE_PKGS=systemd,systemd-sysv,dbus,iproute2,openssh-server,haproxy,keepalived,socat,iputils-ping,procps,sqlite3,ca-certificates
readonly BASE_REV=1 # bump when the base customisation in cmd_base changes
readonly HOST_PKGS=(systemd-container debootstrap iproute2 openssh-client haproxy keepalived openssh-server socat iputils-ping)
readonly CACHE_DIR=${VDI_TESTBED_CACHE:-/var/cache/vdi-testbed}
readonly BASE=$CACHE_DIR/rootfs-$SUITE
readonly RUN_ROOT=/run/vdi-testbed
readonly READY_TIMEOUT=${VDI_TESTBED_READY_TIMEOUT:-60} # s, all hosts of one `up`
readonly STOP_TIMEOUT=${VDI_TESTBED_STOP_TIMEOUT:-15}   # s (integer) for a clean halt
readonly EXTRA_NS=(client desk disp)                    # non-host namespaces
PROG=$(basename "$0")
readonly PROG

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
need_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }
check_bed() {
    [[ ${1:-} =~ ^[a-z][a-z0-9]{0,7}$ ]] ||
        die "bad bed name '${1:-}': 1-8 characters [a-z0-9], starting with a letter"
}
# Alive and not a zombie (a zombie may be our own child when `up` fails).
alive() {
    local st
    st=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}
any_alive() {
    local p
    for p; do if alive "$p"; then return 0; fi; done
    return 1
}
# Wait up to $1 s until none of the PIDs $2... is alive; false on timeout.
wait_gone() {
    local n=$(($1 * 10))
    shift
    while any_alive "$@"; do
        ((n-- > 0)) || return 1
        sleep 0.1
    done
}
# Start time of PID $1 in clock ticks since boot (field 22 of stat; the
# command may hold spaces and parentheses, so cut after the last ')').
start_time() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    # shellcheck disable=SC2086
    set -- $st
    printf '%s' "${20}"
}
# True when bed dir $1 records an owner (VDI_TESTBED_OWNER at `up`) that no
# longer runs: the same PID with the same start time guards against PID reuse.
# A bed without an owner (brought up by hand) is never "gone".
owner_gone() {
    local pid start
    [[ -r $1/owner ]] || return 1
    read -r pid start <"$1/owner" || return 1
    ! alive "$pid" || [[ $(start_time "$pid") != "$start" ]]
}
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
# Clean halt of the containers of nspawn PIDs $2..., waiting up to $1 s: SIGTERM
# to nspawn (it forwards SIGRTMIN+3 to the container's systemd), then each second
# SIGRTMIN+3 straight to the container's init, because a signal that reaches it
# before systemd has installed its handlers is dropped (seen when `up` is
# interrupted during boot).
halt_containers() {
    local n=$(($1 * 10)) p kids
    shift
    kill -TERM "$@" 2>/dev/null || true
    while any_alive "$@"; do
        ((n-- > 0)) || return 1
        if ((n % 10 == 0)); then
            for p; do
                read -ra kids <<<"$(children_of "$p")"
                ((${#kids[@]} == 0)) || kill -s RTMIN+3 "${kids[@]}" 2>/dev/null || true
            done
        fi
        sleep 0.1
    done
}
# PID is the systemd-nspawn we started for machine NAME (guards PID reuse).
is_our_nspawn() {
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *systemd-nspawn* && $cmd == *" -M $2 "* ]]
}
# IP of NAME (client, desk, disp, hN) in the /24 PREFIX (e.g. 10.213.57).
ip_of() {
    case $2 in
    client) echo "$1.2" ;;
    desk) echo "$1.3" ;;
    disp) echo "$1.4" ;;
    h[1-9] | h[1-9][0-9]) echo "$1.$((10 + ${2#h}))" ;;
    *) return 1 ;;
    esac
}
bed_netns() { ip netns list | awk -v re="^$1-(br|client|desk|disp|h[0-9]+)\$" '$1 ~ re { print $1 }'; }
load_env() {
    [[ -f $RUN_ROOT/$1/env ]] || die "bed $1 is not up (no $RUN_ROOT/$1/env)"
    # shellcheck source=/dev/null
    source "$RUN_ROOT/$1/env"
}
# Fill SSH / SCP argv arrays for bed $1 (client namespace, bed key, bed known_hosts).
ssh_setup() {
    local opts=(-F /dev/null -i "$RUN_ROOT/$1/id_ed25519" -o IdentitiesOnly=yes
        -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes
        -o "UserKnownHostsFile=$RUN_ROOT/$1/known_hosts" -o GlobalKnownHostsFile=/dev/null
        -o LogLevel=ERROR -o ConnectTimeout=5)
    SSH=(ip netns exec "$1-client" ssh "${opts[@]}")
    SCP=(ip netns exec "$1-client" scp -q "${opts[@]}")
}
# Unmount everything mounted below directory $1 (deepest first).
umount_under() {
    findmnt -rn -o TARGET | awk -v p="$1/" 'index($0, p) == 1' | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

cmd_deps() {
    need_root
    local p missing=() policy=/usr/sbin/policy-rc.d added=0 rc=0 out
    for p in "${HOST_PKGS[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing host packages: ${missing[*]}"
    # Do not let the packages start sshd/haproxy/keepalived in the root namespace.
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
    fi
    out=$(mktemp)
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } >"$out" 2>&1 || rc=$?
    if ((added)); then rm -f "$policy"; fi
    if ((rc != 0)); then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get failed (rc=$rc)"
    fi
    rm -f "$out"
}

base_stamp() { printf 'suite=%s\nvariant=minbase\ninclude=%s\nrev=%s\n' "$SUITE" "$BASE_PKGS" "$BASE_REV"; }
base_ok() { [[ -f $BASE/etc/vdi-testbed-base && "$(<"$BASE/etc/vdi-testbed-base")" == "$(base_stamp)" ]]; }

cmd_base() {
    need_root
    mkdir -p "$CACHE_DIR"
    exec 8>"$CACHE_DIR/.lock"
    flock 8
    if base_ok; then
        log "base is cached: $BASE"
        exec 8>&-
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap missing: run '$PROG deps' first"
    [[ -z $(beds_up) ]] || die "base must be rebuilt but beds are up ($(beds_up | tr '\n' ' ')): take them down first"
    local mirror tmp="$BASE.tmp.$$" t0 d
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $mirror ]] || die "no mirror found in /etc/apt/sources.list.d/debian.sources"
    for d in "$BASE".tmp.* "$BASE".old.*; do # leftovers of interrupted builds
        [[ -e $d ]] || continue
        umount_under "$d"
        rm -rf --one-file-system "$d"
    done
    t0=$(now)
    log "building base $BASE from $mirror (minutes; log: $CACHE_DIR/debootstrap.log)"
    trap 'umount_under "'"$tmp"'"; rm -rf --one-file-system "'"$tmp"'"' EXIT
    if ! debootstrap --variant=minbase --include="$BASE_PKGS" "$SUITE" "$tmp" "$mirror" \
        >"$CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        die "debootstrap failed, see $CACHE_DIR/debootstrap.log"
    fi
    rm -f "$tmp"/etc/ssh/ssh_host_* "$tmp"/var/cache/apt/archives/*.deb # keys are per host
    : >"$tmp/etc/machine-id"                                              # id is per host
    base_stamp >"$tmp/etc/vdi-testbed-base"
    if [[ -e $BASE ]]; then mv "$BASE" "$BASE.old.$$"; fi
    mv "$tmp" "$BASE"
    trap - EXIT
    rm -rf --one-file-system "$BASE.old.$$"
    exec 8>&-
    log "base built in $(since "$t0") s ($(du -sh "$BASE" | cut -f1))"
}

beds_up() {
    local e
    for e in "$RUN_ROOT"/*/env; do [[ -f $e ]] && basename "$(dirname "$e")"; done
    return 0
}

# Subnet id X for 10.213.X.0/24: $VDI_TESTBED_SUBNET_ID, else derived from a
# hash of the bed name, moving on to the next id while another bed uses it.
pick_subnet() {
    local h i id
    if [[ -n ${VDI_TESTBED_SUBNET_ID:-} ]]; then
        id=$VDI_TESTBED_SUBNET_ID
        if ! [[ $id =~ ^[1-9][0-9]{0,2}$ ]] || ((id > 254)); then die "VDI_TESTBED_SUBNET_ID must be 1..254"; fi
        ! grep -qsx "SUBNET_ID=$id" "$RUN_ROOT"/*/env || die "subnet id $id is used by another bed"
        echo "$id"
        return
    fi
    h=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
    for ((i = 0; i < 254; i++)); do
        id=$(((h + i) % 254 + 1))
        grep -qsx "SUBNET_ID=$id" "$RUN_ROOT"/*/env || { echo "$id"; return; }
    done
    die "no free subnet id"
}

# Namespace BED-NAME with eth0=ADDR/24, its veth peer NAME enslaved to br0 in BED-br.
add_ns() {
    local ns=$1-$2
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$2" netns "$1-br"
    ip -n "$ns" addr add "$3/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$1-br" link set "$2" master br0 up
}

# Overlay root and per-host files for host $2 of bed $1 (IP $3).
prep_host() {
    local dir=$RUN_ROOT/$1/$2 root=$RUN_ROOT/$1/$2/root k
    mkdir -p "$dir/upper" "$dir/work" "$root"
    mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$dir/upper,workdir=$dir/work" "$root"
    echo "$2" >"$root/etc/hostname"
    systemd-id128 new >"$root/etc/machine-id"
    ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
    rm -f "$root"/etc/ssh/ssh_host_*
    for k in ed25519 ecdsa; do # no RSA: it costs ~0.6 s per host
        ssh-keygen -q -t "$k" -N '' -C "root@$2" -f "$root/etc/ssh/ssh_host_${k}_key"
    done
    install -d -m 700 "$root/root/.ssh"
    install -m 600 "$RUN_ROOT/$1/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    printf '%s\n' 'PermitRootLogin prohibit-password' 'PasswordAuthentication no' \
        'KbdInteractiveAuthentication no' 'UseDNS no' 'HostKey /etc/ssh/ssh_host_ed25519_key' \
        'HostKey /etc/ssh/ssh_host_ecdsa_key' >"$root/etc/ssh/sshd_config.d/testbed.conf"
    cp "$RUN_ROOT/$1/hosts" "$root/etc/hosts"
    for k in "$root"/etc/ssh/ssh_host_*_key.pub; do
        printf '%s,%s %s\n' "$2" "$3" "$(cut -d' ' -f1,2 "$k")"
    done >>"$RUN_ROOT/$1/known_hosts"
}

# cgroup hierarchies nspawn uses here: the cgroup2 one, plus name=systemd on a hybrid host.
cgroup_roots() {
    local d
    if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
        echo /sys/fs/cgroup
        return
    fi
    for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
        if [[ -f $d/cgroup.procs ]]; then echo "$d"; fi
    done
}

start_host() {
    local dir=$RUN_ROOT/$1/$2 cg=vdi-testbed/$1-$2 r
    # Each nspawn starts in a cgroup of its own. Without one, every container
    # gets the same /payload cgroup and their systemd instances trample each
    # other's units (random "Failed to attach to cgroup", status=219/CGROUP).
    rm -f "$dir/pid" "$dir/supervisor"
    # The subshell supervises the host as systemd-nspawn@.service does: a
    # reboot inside makes nspawn exit 133, and the host boots again (the
    # console's "reboot when empty" is tested for real). "$dir/pid" is always
    # the current nspawn; TERM to the supervisor ("$dir/supervisor") ends the
    # loop after the fork it may be in (bash runs the trap between commands).
    (
        for r in $(cgroup_roots); do
            mkdir -p "$r/$cg"
            echo "$BASHPID" >"$r/$cg/cgroup.procs"
        done
        stop=0
        trap 'stop=1' TERM
        while :; do
            # Not a process group leader here: setsid execs nspawn in place, so $! is nspawn.
            SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -q -D "$dir/root" --boot \
                --register=no --keep-unit -M "$1-$2" --network-namespace-path="/run/netns/$1-$2" \
                --capability=CAP_NET_ADMIN,CAP_NET_RAW --console=read-only &
            echo $! >"$dir/pid.new" && mv "$dir/pid.new" "$dir/pid"
            rc=0
            while :; do
                wait "$!" && rc=0 || rc=$?
                # A trapped TERM interrupts wait (status > 128) with nspawn still running.
                ((stop == 0)) || exit 0
                alive "$(<"$dir/pid")" || break
            done
            ((rc == 133 && stop == 0)) || exit "$rc"
            echo "testbed: $2 rebooted" >&2
        done
    ) </dev/null >"$dir/console.log" 2>&1 &
    echo $! >"$dir/supervisor"
    # The first nspawn's pid, for wait_ready.
    local n=50
    until [[ -s $dir/pid ]]; do
        ((n-- > 0)) || die "$2: systemd-nspawn did not start"
        sleep 0.1
    done
}

# Remove the cgroups of bed $1, deepest first. A not yet reaped (zombie)
# nspawn keeps its cgroup busy for a moment, hence the bounded retry.
remove_cgroups() {
    local r d n
    for r in $(cgroup_roots); do
        for d in "$r/vdi-testbed/$1"-h*; do
            [[ -d $d ]] || continue
            for ((n = 50; n > 0; n--)); do
                if find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; then break; fi
                sleep 0.1
            done
            [[ ! -d $d ]] || log "warning: cgroup $d not removed"
        done
        rmdir "$r/vdi-testbed" 2>/dev/null || true # fails while another bed uses it
    done
}

# Poll until host $2 answers ssh and its boot finished; $3 = deadline (epoch s).
wait_ready() {
    local bed=$1 h=$2 deadline=$3 ip pid state left
    ip=$(ip_of "$PREFIX" "$h")
    pid=$(<"$RUN_ROOT/$bed/$h/pid")
    until "${SSH[@]}" -n -o ConnectTimeout=1 "root@$ip" true 2>/dev/null; do
        if ! alive "$pid"; then
            tail -n 20 "$RUN_ROOT/$bed/$h/console.log" >&2
            die "$h: systemd-nspawn exited during boot"
        fi
        (($(date +%s) < deadline)) || die "$h: no ssh within ${READY_TIMEOUT}s"
        sleep 0.2
    done
    left=$((deadline - $(date +%s)))
    ((left > 0)) || left=1
    state=$(timeout "$left" "${SSH[@]}" -n "root@$ip" systemctl is-system-running --wait) || true
    case $state in
    running) ;;
    degraded)
        log "$h: degraded; failed units:"
        "${SSH[@]}" -n "root@$ip" systemctl --failed --no-legend --plain >&2 || true
        ;;
    *) die "$h: system state '${state:-timeout}' after ${READY_TIMEOUT}s" ;;
    esac
}

install_deb() { # bed host ip file
    local pkg log=$RUN_ROOT/$1/$2/dpkg.log
    pkg=$(dpkg-deb -f "$4" Package) || die "$4: not a .deb"
    "${SCP[@]}" "$4" "root@$3:/tmp/testbed-install.deb" || die "$2: scp of $4 failed"
    if ! "${SSH[@]}" -n "root@$3" 'DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/testbed-install.deb &&
            rm -f /tmp/testbed-install.deb' >"$log" 2>&1; then
        cat "$log" >&2
        die "$2: dpkg -i $4 failed"
    fi
    log "$2: installed $("${SSH[@]}" -n "root@$3" dpkg-query -W "-f='\${Package} \${Version}'" "$pkg")"
}

up_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if ((rc != 0)); then
        log "up of $UP_BED failed (rc=$rc): tearing it down"
        cmd_down "$UP_BED"
    fi
    exit "$rc"
}

cmd_up() {
    need_root
    [[ $# -ge 2 ]] || die "usage: $PROG up BED N [--deb FILE]..."
    local bed=$1 n=$2 debs=() dir f h i ip t0 deadline
    shift 2
    check_bed "$bed"
    if ! [[ $n =~ ^[1-9][0-9]?$ ]] || ((n > 20)); then die "N must be 1..20"; fi
    while (($#)); do
        case $1 in
        --deb) [[ $# -ge 2 && -f $2 && -r $2 ]] || die "--deb needs a readable file (got '${2:-}')"
            debs+=("$(realpath "$2")")
            shift 2 ;;
        *) die "unknown option '$1'" ;;
        esac
    done
    dir=$RUN_ROOT/$bed
    if [[ -e $dir ]] && owner_gone "$dir"; then
        log "$bed: its owner $(cat "$dir/owner") is gone (killed run): taking the bed down first"
        cmd_down "$bed"
    fi
    [[ ! -e $dir ]] || die "bed $bed exists ($dir): '$PROG down $bed' first"
    [[ -z $(bed_netns "$bed") ]] || die "namespaces of bed $bed are left over: '$PROG down $bed' first"
    command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing: run '$PROG deps' first"
    cmd_base
    t0=$(now)
    mkdir -p "$RUN_ROOT"
    mkdir "$dir"
    if [[ -n ${VDI_TESTBED_OWNER:-} ]]; then
        [[ $VDI_TESTBED_OWNER =~ ^[1-9][0-9]*$ ]] && alive "$VDI_TESTBED_OWNER" ||
            die "VDI_TESTBED_OWNER must be the PID of a running process"
        echo "$VDI_TESTBED_OWNER $(start_time "$VDI_TESTBED_OWNER")" >"$dir/owner"
    fi
    UP_BED=$bed
    trap up_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    exec 9>"$RUN_ROOT/.lock"
    flock 9
    SUBNET_ID=$(pick_subnet "$bed")
    PREFIX=10.213.$SUBNET_ID
    {
        echo "BED=$bed"
        echo "HOSTS=$n"
        echo "SUBNET_ID=$SUBNET_ID"
        echo "PREFIX=$PREFIX"
    } >"$dir/env"
    exec 9>&-

    ssh-keygen -q -t ed25519 -N '' -C "vdi-testbed-$bed" -f "$dir/id_ed25519"
    : >"$dir/known_hosts"
    {
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
        for h in "${EXTRA_NS[@]}"; do printf '%s\t%s\n' "$(ip_of "$PREFIX" "$h")" "$h"; done
        for ((i = 1; i <= n; i++)); do printf '%s\th%d\n' "$(ip_of "$PREFIX" "h$i")" "$i"; done
    } >"$dir/hosts"

    ip netns add "$bed-br"
    ip -n "$bed-br" link set lo up
    ip -n "$bed-br" link add br0 type bridge
    ip -n "$bed-br" link set br0 up
    for h in "${EXTRA_NS[@]}"; do
        add_ns "$bed" "$h" "$(ip_of "$PREFIX" "$h")"
        echo "${h^^}_IP=$(ip_of "$PREFIX" "$h")" >>"$dir/env"
    done
    for ((i = 1; i <= n; i++)); do
        ip=$(ip_of "$PREFIX" "h$i")
        add_ns "$bed" "h$i" "$ip"
        ip netns exec "$bed-h$i" sysctl -qw net.ipv4.ip_nonlocal_bind=1
        prep_host "$bed" "h$i" "$ip"
        echo "H${i}_IP=$ip" >>"$dir/env"
    done
    {
        echo "SSH_KEY=$dir/id_ed25519"
        echo "KNOWN_HOSTS=$dir/known_hosts"
    } >>"$dir/env"

    for ((i = 1; i <= n; i++)); do start_host "$bed" "h$i"; done
    ssh_setup "$bed"
    deadline=$(($(date +%s) + READY_TIMEOUT))
    for ((i = 1; i <= n; i++)); do wait_ready "$bed" "h$i" "$deadline"; done
    log "$bed: $n host(s) ready in $(since "$t0") s"

    for f in "${debs[@]}"; do
        for ((i = 1; i <= n; i++)); do install_deb "$bed" "h$i" "$(ip_of "$PREFIX" "h$i")" "$f"; done
    done
    trap - EXIT INT TERM
    log "$bed: up in $(since "$t0") s; subnet $PREFIX.0/24 (client .2, desk .3, disp .4, hN .(10+N))"
}

cmd_down() {
    need_root
    [[ $# -eq 1 ]] || die "usage: $PROG down BED"
    local bed=$1 dir=$RUN_ROOT/$1 f h i pid pids=() names=() kids=() ns
    check_bed "$bed"
    # First the supervisors, so that no host boots again while it halts.
    local sups=()
    for f in "$dir"/h*/supervisor; do
        [[ -f $f ]] || continue
        h=$(basename "$(dirname "$f")")
        pid=$(<"$f")
        if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && grep -q "/vdi-testbed/$bed-$h\$" "/proc/$pid/cgroup" 2>/dev/null; then
            sups+=("$pid")
        fi
    done
    if ((${#sups[@]})); then
        kill -TERM "${sups[@]}" 2>/dev/null || true
        wait_gone 5 "${sups[@]}" || log "warning: host supervisors alive after SIGTERM: ${sups[*]}"
    fi
    for f in "$dir"/h*/pid; do
        [[ -f $f ]] || continue
        h=$(basename "$(dirname "$f")")
        pid=$(<"$f")
        if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && is_our_nspawn "$pid" "$bed-$h"; then
            pids+=("$pid")
            names+=("$h")
        fi
    done
    if ((${#pids[@]})); then
        if ! halt_containers "$STOP_TIMEOUT" "${pids[@]}"; then
            for i in "${!pids[@]}"; do
                alive "${pids[i]}" || continue
                log "${names[i]}: not halted within ${STOP_TIMEOUT}s: second SIGTERM; console tail:"
                tail -n 15 "$dir/${names[i]}/console.log" >&2 || true
                kill -TERM "${pids[i]}" 2>/dev/null || true # nspawn: terminate immediately
            done
        fi
        if ! wait_gone 3 "${pids[@]}"; then
            for i in "${!pids[@]}"; do
                pid=${pids[i]}
                alive "$pid" || continue
                log "${names[i]}: SIGKILL to nspawn $pid and its container init"
                # Killing nspawn alone would orphan the container's init (its child).
                read -ra kids <<<"$(children_of "$pid")"
                kill -KILL "${kids[@]}" "$pid" 2>/dev/null || true
                pids+=("${kids[@]}")
            done
            wait_gone 5 "${pids[@]}" || log "warning: processes alive after SIGKILL: ${pids[*]}"
        fi
    fi
    pids+=("${sups[@]}")
    if ((${#pids[@]})); then wait "${pids[@]}" 2>/dev/null || true; fi # reap, if ours (failed up)
    [[ ! -d $dir ]] || umount_under "$dir"
    remove_cgroups "$bed"
    for ns in $(bed_netns "$bed"); do
        pid=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        [[ -z $pid ]] || log "warning: processes still in $ns (not ours to kill): $pid"
        ip netns del "$ns"
    done
    if [[ -d $dir ]]; then
        ! findmnt -rn -o TARGET | grep -q "^$dir/" || die "mounts remain below $dir"
        rm -rf --one-file-system "$dir"
    fi
    log "$bed: down"
}

cmd_ssh() {
    [[ $# -ge 2 ]] || die "usage: $PROG ssh BED HOST [CMD...]"
    local bed=$1 h=$2 ip
    shift 2
    check_bed "$bed"
    load_env "$bed"
    if ! [[ $h =~ ^h[1-9][0-9]*$ ]] || ((${h#h} > HOSTS)); then die "no host '$h' in bed $bed (h1..h$HOSTS)"; fi
    ip=$(ip_of "$PREFIX" "$h")
    ssh_setup "$bed"
    exec "${SSH[@]}" "root@$ip" "$@"
}

cmd_cp() {
    [[ $# -eq 4 ]] || die "usage: $PROG cp BED HOST LOCAL_FILE REMOTE_PATH"
    local bed=$1 h=$2 ip
    check_bed "$bed"
    load_env "$bed"
    if ! [[ $h =~ ^h[1-9][0-9]*$ ]] || ((${h#h} > HOSTS)); then die "no host '$h' in bed $bed (h1..h$HOSTS)"; fi
    [[ -r $3 ]] || die "cp: cannot read '$3'"
    ip=$(ip_of "$PREFIX" "$h")
    ssh_setup "$bed"
    exec "${SCP[@]}" "$3" "root@$ip:$4"
}

cmd_exec() {
    [[ $# -ge 3 ]] || die "usage: $PROG exec BED NSNAME CMD..."
    local ns=$1-$2
    check_bed "$1"
    [[ -e /run/netns/$ns ]] || die "no namespace $ns"
    shift 2
    exec ip netns exec "$ns" "$@"
}

cmd_ip() {
    [[ $# -eq 2 ]] || die "usage: $PROG ip BED NAME"
    check_bed "$1"
    load_env "$1"
    if [[ $2 =~ ^h[1-9][0-9]*$ ]] && ((${2#h} > HOSTS)); then die "no host '$2' in bed $1"; fi
    ip_of "$PREFIX" "$2" || die "unknown name '$2' (client, desk, disp, h1..h$HOSTS)"
}

cmd_list() {
    local bed i pid running
    for bed in $(beds_up); do
        (
            load_env "$bed"
            running=0
            for ((i = 1; i <= HOSTS; i++)); do
                pid=$(cat "$RUN_ROOT/$bed/h$i/pid" 2>/dev/null || true)
                if [[ -n $pid ]] && alive "$pid"; then running=$((running + 1)); fi
            done
            printf '%s\thosts=%s\tsubnet=%s.0/24\trunning=%s/%s\n' "$bed" "$HOSTS" "$PREFIX" "$running" "$HOSTS"
        )
    done
}

usage() {
    cat <<EOF
usage: $PROG deps | base | list
       $PROG up BED N [--deb FILE]...   bring up hosts h1..hN (BED: e.g. tb1)
       $PROG ssh BED HOST [CMD...]      run CMD on HOST over ssh from BED-client
       $PROG cp BED HOST FILE PATH      copy FILE to PATH on HOST (scp from BED-client)
       $PROG exec BED NSNAME CMD...     run CMD in namespace BED-NSNAME
       $PROG ip BED NAME                print the address of client|desk|disp|hN
       $PROG down BED                   stop and remove everything of BED
EOF
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
    deps | base | up | down | ssh | cp | exec | ip | list) "cmd_$cmd" "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
    esac
}

main "$@"
