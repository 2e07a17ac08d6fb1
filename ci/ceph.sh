#!/usr/bin/env bash
# A throw-away Ceph object store for the tests: one monitor, one OSD and one RADOS
# Gateway (the S3 API iDigBio's storage speaks), run as plain background processes.
#
#   ci/ceph.sh start            install Ceph if missing, start it, print the env
#   ci/ceph.sh stop             stop what `start` started, remove the state folder
#   ci/ceph.sh env              print the env (exit 1 when not running)
#   ci/ceph.sh status           one line per daemon (exit 3 when not all running)
#   ci/ceph.sh stop-gateway     stop only the gateway (fault tests)
#   ci/ceph.sh start-gateway    start it again on the same port, with the same data
#   ci/ceph.sh restart-gateway  both of the above
#
# `eval "$(ci/ceph.sh start)"` sets IDIGDASK_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY and IDIGDASK_CEPH_DIR; progress goes to stderr.
#
# Settings (environment):
#   IDIGDASK_CEPH_DIR    state folder (default /tmp/idigdask-ceph)
#   IDIGDASK_CEPH_PORT   gateway port (default: a free port)
#   IDIGDASK_CEPH_STORE  memstore (default, data in RAM) or bluestore (sparse file)
#   IDIGDASK_CEPH_SIZE_GB  OSD capacity in GiB (default 4)
#
# Needs root on Debian (apt-get); no systemd, no containers. Everything listens on
# 127.0.0.1 only and every file lives in the state folder.
set -euo pipefail

STATE="${IDIGDASK_CEPH_DIR:-/tmp/idigdask-ceph}"
STATE="${STATE%/}"
STORE="${IDIGDASK_CEPH_STORE:-memstore}"
SIZE_GB="${IDIGDASK_CEPH_SIZE_GB:-4}"
CONF="$STATE/ceph.conf"
PIDS="$STATE/pids"
LOCK="$STATE.lock"          # beside the state folder: `stop` removes the folder
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
COMMANDS=(ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool)
# Fixed test credentials: the store only ever listens on 127.0.0.1.
ACCESS_KEY="IDIGDASKTESTACCESSKEY0"
SECRET_KEY="idigdask-test-secret-0123456789abcdefghij"
S3_USER="idigdask-test"
WAIT_S="${IDIGDASK_CEPH_WAIT_S:-60}"

log() { printf 'ceph.sh: %s\n' "$*" >&2; }
die() { printf 'ceph.sh: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- installation
require_root_debian() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs Ceph daemons)"
    command -v apt-get >/dev/null && [[ -r /etc/debian_version ]] \
        || die "needs Debian with apt-get (found no /etc/debian_version or apt-get)"
}

ceph_installed() {
    local c
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || return 1; done
}

install_ceph() {
    ceph_installed && return 0
    log "installing ${PACKAGES[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists yet: update only when apt cannot see Ceph.
    if ! apt-cache show ceph-mon >/dev/null 2>&1; then
        apt-get update -q >&2 || die "apt-get update failed"
    fi
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends \
                "${PACKAGES[@]}" >&2; } \
        || die "apt-get install ${PACKAGES[*]} failed"
    ceph_installed || die "Ceph packages installed but commands missing: ${COMMANDS[*]}"
}

# ---------------------------------------------------------------- processes
# A recorded pid counts only while it still runs one of our daemons with our
# config file, so a reused pid is never signalled.
pid_of() {
    local f="$PIDS/$1" pid
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF" || return 1
    echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# Start a daemon in the foreground (-f) in its own session, so it survives the
# caller's terminal and signals, and record its pid.
launch() {
    local name=$1; shift
    # fd 9 is the command lock: the daemons must not hold it.
    setsid "$@" -f -c "$CONF" </dev/null >>"$STATE/log/$name.out" 2>&1 9>&- &
    echo $! >"$PIDS/$name"
}

stop_daemon() {   # stop_daemon NAME [GRACE_SECONDS]
    local name=$1 grace=${2:-20} pid i
    pid=$(pid_of "$name") || { rm -f "$PIDS/$name"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do   # then force
        [[ -e /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -e /proc/$pid ]]; then
        log "$name did not stop in ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    fi
    rm -f "$PIDS/$name"
}

log_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# ---------------------------------------------------------------- ports
# Ports are read from /proc/net (no extra tools). A port counts as free only when no
# socket at all uses it; a restart needs only that nothing listens on it (its old
# connections may linger in TIME_WAIT).
port_used() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qE "^ *[0-9]+: [0-9A-F]+:$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

port_listened() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:[0-9A-F]+ 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Below Linux's ephemeral range (32768-60999), so no outgoing connection takes it later.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        port_used "$p" || { echo "$p"; return 0; }
    done
    die "found no free TCP port in 20000-31999"
}

# ---------------------------------------------------------------- cluster
ceph_cli() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@" 2>>"$STATE/log/cli.err"; }

write_conf() {
    local fsid=$1 mon_port=$2 rgw_port=$3 store_conf
    if [[ $STORE == memstore ]]; then
        # Data in RAM: no block device, the fastest start.
        store_conf="osd objectstore = memstore
memstore device bytes = $((SIZE_GB * 1024 * 1024 * 1024))"
    elif [[ $STORE == bluestore ]]; then
        # BlueStore on a sparse file: less memory for larger data.
        store_conf="osd objectstore = bluestore
bluestore block path = $STATE/osd-block.img
bluestore block create = true
bluestore block size = $((SIZE_GB * 1024 * 1024 * 1024))
bluestore fsck on mount = false
osd memory target = 1073741824"
    else
        die "IDIGDASK_CEPH_STORE must be memstore or bluestore, not '$STORE'"
    fi
    cat >"$CONF" <<EOF
# Written by ci/ceph.sh: a one-node test cluster, 127.0.0.1 only.
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
# No cephx: the daemons and clients share this machine only. The gateway's monitor
# connection defaults to "secure" mode, which needs cephx; crc lets it connect.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
# One OSD: pools of size 1, few placement groups, no autoscaler (no ceph-mgr).
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd crush initial weight = 1
# Paxos proposals every 0.1 s instead of 1 s: start-up in seconds, not ~13 s.
paxos propose interval = 0.1
mon data avail warn = 2
mon data avail crit = 1
# Keep every file inside the state folder (the defaults are /var/log/ceph etc.).
log file = $STATE/log/\$name.log
mon cluster log file = $STATE/log/cluster.log
crash dir = $STATE/crash
run dir = $STATE/run
admin socket = $STATE/run/\$name.asok
pid file = $STATE/run/\$name.pid
keyring = $STATE/keyring
mon data = $STATE/mon
osd data = $STATE/osd
rgw data = $STATE/rgw
$store_conf

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw thread pool size = 64
rgw init timeout = $WAIT_S
rgw dynamic resharding = false
EOF
}

wait_for() {   # wait_for SECONDS COMMAND...: true once COMMAND succeeds
    local limit=$1 deadline
    shift
    deadline=$(($(date +%s) + limit))
    until "$@"; do
        if (($(date +%s) >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

mon_ready() { running mon && ceph_cli -s >/dev/null; }
osd_up() { running osd && ceph_cli osd stat 2>/dev/null | grep -q '1 up'; }

# The gateway answers an anonymous "list buckets" once it serves S3.
gateway_answers() {
    local port=$1
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$port" >&3
        reply=$(timeout 5 cat <&3)
        [[ $reply == *ListAllMyBucketsResult* ]]
    ) 2>/dev/null
}

start_mon() {
    local fsid=$1 mon_port=$2
    timeout 60 monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
        "$STATE/monmap" >>"$STATE/log/setup.log" 2>&1 || die "monmaptool failed (see $STATE/log/setup.log)"
    timeout 60 ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE/monmap" \
        >>"$STATE/log/setup.log" 2>&1 || { log_tail "$STATE/log/setup.log"; die "ceph-mon --mkfs failed"; }
    launch mon ceph-mon -i a
    wait_for "$WAIT_S" mon_ready || {
        log_tail "$STATE/log/mon.a.log" "$STATE/log/mon.out" "$STATE/log/cli.err"
        die "the monitor did not answer within ${WAIT_S}s"
    }
}

start_osd() {
    local uuid id
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph_cli osd new "$uuid") || { log_tail "$STATE/log/cli.err"; die "ceph osd new failed"; }
    [[ $id == 0 ]] || die "expected OSD id 0, got '$id'"
    mkdir -p "$STATE/osd"
    timeout 120 ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" \
        >>"$STATE/log/setup.log" 2>&1 || { log_tail "$STATE/log/setup.log"; die "ceph-osd --mkfs failed"; }
    launch osd ceph-osd -i 0
    wait_for "$WAIT_S" osd_up || {
        log_tail "$STATE/log/osd.0.log" "$STATE/log/osd.out" "$STATE/log/cli.err"
        die "the OSD did not come up within ${WAIT_S}s"
    }
}

start_gateway() {
    local port
    port=$(<"$STATE/port")
    if running rgw && gateway_answers "$port"; then return 0; fi
    running rgw || {
        port_listened "$port" && die "gateway port $port is taken by another process"
        launch rgw radosgw -n client.rgw.a
    }
    wait_for "$WAIT_S" gateway_answers "$port" || {
        log_tail "$STATE/log/client.rgw.a.log" "$STATE/log/rgw.out"
        die "the gateway did not answer S3 requests on 127.0.0.1:$port within ${WAIT_S}s"
    }
}

create_user() {
    timeout 60 radosgw-admin -c "$CONF" user create --uid "$S3_USER" \
        --display-name "idigdask tests" --access-key "$ACCESS_KEY" \
        --secret-key "$SECRET_KEY" >>"$STATE/log/setup.log" 2>&1 \
        || { log_tail "$STATE/log/setup.log"; die "radosgw-admin user create failed"; }
}

write_env() {
    cat >"$STATE/env" <<EOF
export IDIGDASK_S3_ENDPOINT=http://127.0.0.1:$(<"$STATE/port")
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export IDIGDASK_CEPH_DIR=$STATE
EOF
}

all_running() { running mon && running osd && running rgw && [[ -r $STATE/env ]]; }

stop_all() {
    # One at a time, gateway first: stopping the gateway and OSD together can hang it.
    # A daemon whose monitor or OSD is already gone hangs on a clean stop: give it
    # only a short grace before killing it.
    if running mon && running osd; then stop_daemon rgw; else stop_daemon rgw 2; fi
    if running mon; then stop_daemon osd; else stop_daemon osd 2; fi
    stop_daemon mon
}

fresh_start() {
    local t0 fsid mon_port rgw_port
    t0=$(now_ms)
    if [[ -d $STATE ]]; then
        log "clearing a stale state folder $STATE"
        stop_all
        rm -rf "$STATE"
    fi
    mkdir -p "$STATE"/{log,crash,run,mon,rgw} "$PIDS"
    # On any failure below, stop what was started (the logs stay for a look).
    trap 'stop_all; log "start failed; logs kept in $STATE/log"' EXIT
    fsid=$(cat /proc/sys/kernel/random/uuid)
    mon_port=$(free_port)
    rgw_port=${IDIGDASK_CEPH_PORT:-$(free_port)}
    [[ $rgw_port =~ ^[0-9]+$ ]] || die "IDIGDASK_CEPH_PORT must be a port number, not '$rgw_port'"
    port_listened "$rgw_port" && die "gateway port $rgw_port is already taken"
    echo "$rgw_port" >"$STATE/port"
    write_conf "$fsid" "$mon_port" "$rgw_port"
    log "starting monitor on 127.0.0.1:$mon_port"
    start_mon "$fsid" "$mon_port"
    log "starting OSD ($STORE, ${SIZE_GB} GiB)"
    start_osd
    log "starting gateway on 127.0.0.1:$rgw_port"
    start_gateway
    create_user
    write_env
    trap - EXIT
    log "ready in $(( ($(now_ms) - t0) ))ms: S3 at http://127.0.0.1:$rgw_port"
}

# ---------------------------------------------------------------- commands
check_settings() {
    [[ $STORE == memstore || $STORE == bluestore ]] \
        || die "IDIGDASK_CEPH_STORE must be memstore or bluestore, not '$STORE'"
    [[ $SIZE_GB =~ ^[1-9][0-9]*$ ]] || die "IDIGDASK_CEPH_SIZE_GB must be a whole number, not '$SIZE_GB'"
}

cmd_start() {
    install_ceph
    if all_running && gateway_answers "$(<"$STATE/port")"; then
        cat "$STATE/env"
        return 0
    fi
    if running mon && running osd && [[ -r $STATE/env ]]; then
        log "monitor and OSD are running; starting the gateway"
        start_gateway
    else
        fresh_start
    fi
    cat "$STATE/env"
}

cmd_stop() {
    [[ -d $STATE ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
    stop_all
    rm -rf "$STATE"
    log "stopped; removed $STATE"
}

cmd_env() {
    all_running || die "not running (no live daemons in $STATE); run: ci/ceph.sh start"
    cat "$STATE/env"
}

cmd_status() {
    local d ok=0 pid
    for d in mon osd rgw; do
        if pid=$(pid_of "$d"); then echo "$d: running (pid $pid)"
        else echo "$d: stopped"; ok=3; fi
    done
    if [[ -r $STATE/port ]]; then
        if gateway_answers "$(<"$STATE/port")"; then
            echo "s3: answering at http://127.0.0.1:$(<"$STATE/port")"
        else echo "s3: not answering at http://127.0.0.1:$(<"$STATE/port")"; ok=3; fi
    fi
    return $ok
}

cmd_stop_gateway() {
    [[ -d $STATE ]] || die "not running ($STATE does not exist)"
    stop_daemon rgw
}

cmd_start_gateway() {
    running mon && running osd && [[ -r $STATE/port ]] \
        || die "monitor/OSD not running in $STATE; run: ci/ceph.sh start"
    log "starting gateway on 127.0.0.1:$(<"$STATE/port")"
    start_gateway
}

main() {
    local cmd=${1:-}
    case $cmd in
        env) cmd_env; return ;;            # read-only: no root, no lock
        status) cmd_status; return ;;
        start) check_settings; require_root_debian ;;
        stop|stop-gateway|start-gateway|restart-gateway) require_root_debian ;;
        *) die "usage: ci/ceph.sh start|stop|env|status|stop-gateway|start-gateway|restart-gateway" ;;
    esac
    # Serialise the commands that change a state folder (parallel runs, start vs stop).
    mkdir -p "$(dirname "$STATE")"
    exec 9>"$LOCK" || die "cannot open the lock file $LOCK"
    flock -w 600 9 || die "timed out waiting for the lock $LOCK"
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
        stop-gateway) cmd_stop_gateway ;;
        start-gateway) cmd_start_gateway ;;
        restart-gateway) cmd_stop_gateway; cmd_start_gateway ;;
    esac
}

main "$@"
