#!/usr/bin/env bash
# A throw-away Son of Grid Engine cell for the tests: one qmaster (sge_qmaster) and one
# execution daemon (sge_execd) on this host, run as plain background processes (no
# systemd, no init scripts, no containers).
#
#   ci/sge.sh start    install Grid Engine if missing, start a fresh cell, print the env
#   ci/sge.sh stop     delete every job, stop the daemons, remove the state folder
#   ci/sge.sh env      print the env (exit 1 when not running)
#   ci/sge.sh status   one line per daemon and queue (exit 3 when not all up)
#
# `eval "$(ci/sge.sh start)"` sets SGE_ROOT, SGE_CELL, SGE_QMASTER_PORT, SGE_EXECD_PORT
# and IDIGDASK_SGE_DIR, so qsub, qstat, qdel (and dask-jobqueue's SGECluster) use this
# cell; progress goes to stderr.
#
# The cell: this host is its admin, submit and execution host; queues all.q and debug.q
# with IDIGDASK_SGE_SLOTS slots each; a parallel environment "smp"; classic (flat file)
# spooling; jobs of root allowed (min_uid and min_gid 0); a job script runs under its
# own #! line (shell_start_mode unix_behavior); the scheduler runs every 2 seconds.
#
# Settings (environment):
#   IDIGDASK_SGE_DIR           state folder: SGE_ROOT, cell, spool, logs (default /tmp/idigdask-sge)
#   IDIGDASK_SGE_QMASTER_PORT  qmaster port (default: a free port)
#   IDIGDASK_SGE_EXECD_PORT    execd port (default: a free port)
#   IDIGDASK_SGE_SLOTS         slots of each queue (default: the number of cores)
#   IDIGDASK_SGE_WAIT_S        how long start waits for the cell to run a job (default 90)
#
# Needs root on Debian (apt-get; packages gridengine-master, gridengine-exec,
# gridengine-client). The daemons run as root (admin_user none) and every file of the
# cell lives in the state folder. Grid Engine insists that a host's name and the name
# its address resolves back to agree (often "myhost" against "localhost"): the cell's
# host_aliases file maps every name of this host to one, so /etc/hosts stays untouched.
# A job of root gets no TMPDIR and no LD_LIBRARY_PATH (not even with -v or -V); a job
# of another user gets both.
set -euo pipefail

STATE="${IDIGDASK_SGE_DIR:-/tmp/idigdask-sge}"
STATE="${STATE%/}"
ROOT="$STATE/root"                   # SGE_ROOT
CELL=idigdask                        # SGE_CELL
COMMON="$ROOT/$CELL/common"
QSPOOL="$STATE/spool/qmaster"
ESPOOL="$STATE/spool/execd"
PIDS="$STATE/pids"
LOCK="$STATE.lock"                   # beside the state folder: `stop` removes the folder
WAIT_S="${IDIGDASK_SGE_WAIT_S:-90}"
SLOTS="${IDIGDASK_SGE_SLOTS:-$(nproc 2>/dev/null || echo 1)}"
QUEUES=(all.q debug.q)
PACKAGES=(gridengine-master gridengine-exec gridengine-client)
COMMANDS=(qsub qstat qdel qconf sge_qmaster sge_execd)
LIB=/usr/lib/gridengine              # Debian's Grid Engine binaries and spool tools
SHARE=/usr/share/gridengine

log() { printf 'sge.sh: %s\n' "$*" >&2; }
die() { printf 'sge.sh: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- installation
require_root_debian() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs Grid Engine daemons)"
    command -v apt-get >/dev/null && [[ -r /etc/debian_version ]] \
        || die "needs Debian with apt-get (found no /etc/debian_version or apt-get)"
}

sge_installed() {
    local c
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || return 1; done
    for c in spoolinit spooldefaults gethostname gethostbyname gethostbyaddr; do
        [[ -x $LIB/$c ]] || return 1
    done
}

install_sge() {
    sge_installed && return 0
    log "installing ${PACKAGES[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    # Let the packages configure no cell of their own (no questions, no default cell):
    # this script makes its own in the state folder.
    debconf-set-selections <<'EOF' || die "debconf-set-selections failed"
gridengine-common shared/gridengineconfig boolean false
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
EOF
    # The packages' postinst scripts start their init scripts through invoke-rc.d:
    # without a policy-rc.d that says no, a Debian host with an init would start a
    # default qmaster. Add one for the install when there is none (containers have one).
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# ci/sge.sh: no service starts while it installs Grid Engine\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
        trap "rm -f '$policy'" EXIT
    fi
    # A fresh machine has no package lists yet: update only when apt cannot see SGE.
    if ! apt-cache show gridengine-master >/dev/null 2>&1; then
        apt-get update -q >&2 || die "apt-get update failed"
    fi
    # Another script may be installing its own packages at the same time: wait for
    # dpkg's lock instead of failing at once.
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends)
    "${apt[@]}" "${PACKAGES[@]}" >&2 \
        || { apt-get update -q >&2 && "${apt[@]}" "${PACKAGES[@]}" >&2; } \
        || die "apt-get install ${PACKAGES[*]} failed"
    if [[ -n $made_policy ]]; then rm -f "$policy"; trap - EXIT; fi
    sge_installed || die "Grid Engine packages installed but commands missing: ${COMMANDS[*]}"
}

# ---------------------------------------------------------------- processes
# A recorded pid counts only while it is a live (not zombie) Grid Engine daemon of the
# kind named whose environment names our SGE_ROOT, so a reused pid is never signalled.
pid_alive() {   # pid_alive PID: runs and is no zombie
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

ours() {        # ours PID: its environment holds SGE_ROOT=$ROOT
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF -- "SGE_ROOT=$ROOT"
}

pid_of() {
    local f="$PIDS/$1" pid
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "sge_$1" || return 1
    ours "$pid" || return 1
    echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# Start a daemon in its own session, so it survives the caller's terminal and signals,
# and record its pid. SGE_ND keeps it in the foreground (no fork into the background),
# so $! is the daemon's pid (its messages go to its spool folder's "messages" file and,
# in the foreground, to $STATE/log/NAME.out too). The environment is a clean one, as
# an init system gives: jobs inherit the execd's, and the caller's (its PATH, its
# variables) would otherwise leak into every job.
launch() {
    local name=$1
    # fd 9 is the command lock: the daemons (and the jobs they start) must not hold it.
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL" SGE_ARCH="$SGE_ARCH" \
        SGE_QMASTER_PORT="$SGE_QMASTER_PORT" SGE_EXECD_PORT="$SGE_EXECD_PORT" SGE_ND=true \
        setsid "$(command -v "sge_$name")" </dev/null >>"$STATE/log/$name.out" 2>&1 9>&- &
    echo $! >"$PIDS/$name"
}

wait_gone() {   # wait_gone SECONDS PID...: true once none of them runs
    local limit=$1 i p left
    shift
    for ((i = 0; i <= limit * 10; i++)); do
        left=0
        for p in "$@"; do pid_alive "$p" && left=1; done
        ((left)) || return 0
        sleep 0.1
    done
    return 1
}

stop_daemon() {   # stop_daemon NAME [GRACE_SECONDS]: TERM, then KILL after the grace
    local name=$1 grace=${2:-30} pid
    pid=$(pid_of "$name") || { rm -f "$PIDS/$name"; return 0; }
    if ! wait_gone 2 "$pid"; then
        log "stopping sge_$name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$grace" "$pid"; then
            log "sge_$name did not stop in ${grace}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone 5 "$pid" || true
        fi
    fi
    rm -f "$PIDS/$name"
}

descendants() {   # descendants PID: every process below PID (shepherds, jobs)
    local -A kids=()
    local stat pid ppid rest queue=("$1") p out=()
    for stat in /proc/[0-9]*/stat; do
        rest=$(cat "$stat" 2>/dev/null) || continue
        pid=${stat#/proc/}; pid=${pid%/stat}
        rest=${rest##*) }                 # "S PPID ..."
        ppid=${rest#* }; ppid=${ppid%% *}
        kids[$ppid]+=" $pid"
    done
    while ((${#queue[@]})); do
        p=${queue[0]}; queue=("${queue[@]:1}")
        for pid in ${kids[$p]:-}; do out+=("$pid"); queue+=("$pid"); done
    done
    echo "${out[@]:-}"
}

log_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

daemon_logs() {
    log_tail "$QSPOOL/messages" "$STATE/log/qmaster.out" "$STATE"/spool/execd/*/messages \
        "$STATE/log/execd.out" "$STATE/log/setup.log"
}

# ---------------------------------------------------------------- ports
# Ports are read from /proc/net (no extra tools). A port counts as free only when no
# socket at all uses it.
port_used() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qE "^ *[0-9]+: [0-9A-F]+:$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Below Linux's ephemeral range (32768-60999), so no outgoing connection takes it later.
free_port() {   # free_port [NOT_THIS_ONE]
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $p == "${1:-}" ]] && continue
        port_used "$p" || { echo "$p"; return 0; }
    done
    die "found no free TCP port in 20000-31999"
}

# ---------------------------------------------------------------- cell
# The environment of every Grid Engine command and daemon this script runs.
use_cell() {
    export SGE_ROOT="$ROOT" SGE_CELL="$CELL"
    SGE_ARCH=$("$SHARE/util/arch")
    export SGE_ARCH
    # shellcheck source=/dev/null
    [[ -r $STATE/ports ]] && source "$STATE/ports"
    export SGE_QMASTER_PORT SGE_EXECD_PORT
    unset SGE_DEBUG_LEVEL SGE_ND
}

qconf_() { timeout 30 qconf "$@" >>"$STATE/log/setup.log" 2>&1; }

# Every name this host goes by: its own (as Grid Engine resolves it) first, then the
# others (`hostname`, `hostname -f`, what its addresses and 127.0.0.1 resolve back
# to), for the cell's host_aliases file.
host_names() {
    local name addrs a n out=()
    name=$("$LIB/gethostname" -name 2>/dev/null) && [[ -n $name ]] || die \
        "this host's name '$(hostname)' does not resolve (add it to /etc/hosts; Grid Engine needs it)"
    out=("$name")
    addrs=$("$LIB/gethostbyname" -all "$name" 2>/dev/null | sed -n 's/^Host Address(es)://p')
    for n in "$(hostname)" "$(hostname -f 2>/dev/null || true)"; do out+=("$n"); done
    for a in $addrs 127.0.0.1; do
        out+=("$("$LIB/gethostbyaddr" -name "$a" 2>/dev/null || true)")
    done
    # Unique, non-empty, the first kept first.
    printf '%s\n' "${out[@]}" | awk 'NF && !seen[$1]++ {print $1}' | tr '\n' ' '
}

write_files() {
    local names=("$@") arch
    arch=$SGE_ARCH
    mkdir -p "$ROOT/bin" "$ROOT/utilbin" "$COMMON" "$QSPOOL" "$ESPOOL" "$STATE/setup"
    # An SGE_ROOT of our own that points at Debian's files.
    ln -sfn "$LIB" "$ROOT/bin/$arch"
    ln -sfn "$LIB" "$ROOT/utilbin/$arch"
    ln -sfn "$SHARE/util" "$ROOT/util"
    cat >"$COMMON/bootstrap" <<EOF
# Version: 8.1.9
# Written by ci/sge.sh: a one-host test cell.
admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         classic
spooling_lib            libspoolc
spooling_params         $COMMON;$QSPOOL
binary_path             /usr/sbin
qmaster_spool_dir       $QSPOOL
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
EOF
    echo "${names[0]}" >"$COMMON/act_qmaster"
    if ((${#names[@]} > 1)); then
        echo "${names[*]}" >"$COMMON/host_aliases"
    fi
    # The global configuration: Debian's default, but spooled here, root's jobs
    # allowed, no mail, frequent load reports and accounting written at once.
    sed -e "s#^execd_spool_dir .*#execd_spool_dir        $ESPOOL#" \
        -e 's/^min_uid .*/min_uid                0/' \
        -e 's/^min_gid .*/min_gid                0/' \
        -e 's#^mailer .*#mailer                 /bin/true#' \
        -e 's/^administrator_mail .*/administrator_mail     none/' \
        -e 's/^load_report_time .*/load_report_time       00:00:05/' \
        -e 's/^execd_params .*/execd_params           ENABLE_ADDGRP_KILL=TRUE/' \
        -e 's/^reporting_params .*/reporting_params       accounting=true reporting=false flush_time=00:00:15 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00/' \
        "$SHARE/default-configuration" >"$STATE/setup/global"
    grep -q "^min_uid  *0$" "$STATE/setup/global" || die "could not write the global configuration"
}

init_spool() {
    # The spool tools need absolute paths (a relative one fails without a word).
    {
        "$LIB/spoolinit" classic libspoolc "$COMMON;$QSPOOL" init &&
        "$LIB/spooldefaults" configuration "$STATE/setup/global" &&
        "$LIB/spooldefaults" complexes "$SHARE/util/resources/centry" &&
        "$LIB/spooldefaults" usersets "$SHARE/util/resources/usersets" &&
        "$LIB/spooldefaults" managers root
    } >>"$STATE/log/setup.log" 2>&1 || { log_tail "$STATE/log/setup.log"; die "initialising the spool failed"; }
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

qmaster_answers() { running qmaster && timeout 10 qconf -sh >/dev/null 2>&1; }

# Every queue instance is listed with no state (no "u", "a", "E", "d", ...): the
# execd has reported and the queues take jobs.
queues_ok() {
    local out q
    out=$(timeout 10 qstat -f 2>/dev/null) || return 1
    for q in "${QUEUES[@]}"; do
        awk -v q="$q@" 'index($1, q) == 1 && NF == 5 {ok=1} END {exit !ok}' <<<"$out" || return 1
    done
}

configure_cell() {
    local host=$1 q seq=0
    # Scheduling every 2 s and right after each submission or finished job (the
    # default waits up to 15 s).
    timeout 10 qconf -ssconf >"$STATE/setup/sched" 2>>"$STATE/log/setup.log" \
        || die "qconf -ssconf failed"
    sed -i -e 's/^schedule_interval .*/schedule_interval                 0:0:2/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
        -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' \
        -e 's/^job_load_adjustments .*/job_load_adjustments              NONE/' \
        -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time        0:0:0/' \
        "$STATE/setup/sched"
    qconf_ -Msconf "$STATE/setup/sched" || die "qconf -Msconf failed (see $STATE/log/setup.log)"
    qconf_ -as "$host" || die "qconf -as $host failed (see $STATE/log/setup.log)"
    cat >"$STATE/setup/exechost" <<EOF
hostname              $host
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
    qconf_ -Ae "$STATE/setup/exechost" || die "qconf -Ae failed (see $STATE/log/setup.log)"
    sed "s/^slots .*/slots              $SLOTS/" "$SHARE/util/resources/pe/smp" >"$STATE/setup/pe-smp"
    qconf_ -Ap "$STATE/setup/pe-smp" || die "qconf -Ap failed (see $STATE/log/setup.log)"
    for q in "${QUEUES[@]}"; do
        # From the template `qconf -sq` prints; no load threshold, so a busy test
        # machine never puts the queue in alarm state.
        timeout 10 qconf -sq >"$STATE/setup/queue-$q" 2>>"$STATE/log/setup.log" \
            || die "qconf -sq failed"
        sed -i -e "s/^qname .*/qname                 $q/" \
            -e "s/^hostlist .*/hostlist              $host/" \
            -e "s/^seq_no .*/seq_no                $seq/" \
            -e 's/^load_thresholds .*/load_thresholds       NONE/' \
            -e 's/^pe_list .*/pe_list               smp/' \
            -e "s/^slots .*/slots                 $SLOTS/" \
            -e 's#^shell .*#shell                 /bin/bash#' \
            -e 's/^shell_start_mode .*/shell_start_mode      unix_behavior/' \
            "$STATE/setup/queue-$q"
        qconf_ -Aq "$STATE/setup/queue-$q" || die "qconf -Aq $q failed (see $STATE/log/setup.log)"
        seq=$((seq + 1))
    done
}

# A job runs: submitted, scheduled, started by the execd, finished with status 0.
job_runs() {
    local limit=$1
    timeout "$limit" qsub -sync y -b y -q "${QUEUES[0]}" -N idigdask-sge-check -j y -o /dev/null \
        true >>"$STATE/log/setup.log" 2>&1
}

write_env() {
    cat >"$STATE/env" <<EOF
export SGE_ROOT=$ROOT
export SGE_CELL=$CELL
export SGE_QMASTER_PORT=$SGE_QMASTER_PORT
export SGE_EXECD_PORT=$SGE_EXECD_PORT
export IDIGDASK_SGE_DIR=$STATE
EOF
}

all_running() { running qmaster && running execd && [[ -r $STATE/env ]]; }

stop_all() {
    local epid qpid host rest=()
    [[ -r $STATE/ports ]] && use_cell
    if qmaster_answers; then
        # No job outlives the cell: delete them all, give the execd a moment to kill them.
        timeout 20 qdel -f -u '*' '*' >/dev/null 2>&1 || true
        wait_for 15 no_jobs || log "jobs still listed after qdel; killing what is left"
    fi
    if epid=$(pid_of execd); then
        # A stopped execd leaves its jobs running: note them now, kill them after.
        read -r -a rest <<<"$(descendants "$epid")"
        host=$(cat "$COMMON/act_qmaster" 2>/dev/null) || host=""
        if [[ -n $host ]] && qmaster_answers; then
            timeout 10 qconf -ke "$host" >/dev/null 2>&1 || true
        fi
        stop_daemon execd
        if ((${#rest[@]})); then
            kill -TERM "${rest[@]}" 2>/dev/null || true
            wait_gone 5 "${rest[@]}" || { kill -KILL "${rest[@]}" 2>/dev/null || true; }
        fi
    fi
    rm -f "$PIDS/execd"
    if qpid=$(pid_of qmaster); then
        qmaster_answers && { timeout 10 qconf -km >/dev/null 2>&1 || true; }
        stop_daemon qmaster
    fi
    rm -f "$PIDS/qmaster"
}

no_jobs() { [[ -z $(timeout 10 qstat -u '*' 2>/dev/null) ]]; }

fresh_start() {
    local t0 qport eport names host
    t0=$(now_ms)
    if [[ -d $STATE ]]; then
        log "clearing a stale state folder $STATE"
        stop_all
        rm -rf "$STATE"
    fi
    mkdir -p "$STATE/log" "$PIDS"
    # On any failure below, stop what was started (the logs stay for a look).
    trap 'rc=$?; if ((rc)); then daemon_logs; stop_all; log "start failed; logs kept in $STATE"; fi' EXIT
    qport=${IDIGDASK_SGE_QMASTER_PORT:-$(free_port)}
    eport=${IDIGDASK_SGE_EXECD_PORT:-$(free_port "$qport")}
    [[ $qport =~ ^[0-9]+$ && $eport =~ ^[0-9]+$ ]] \
        || die "IDIGDASK_SGE_QMASTER_PORT and IDIGDASK_SGE_EXECD_PORT must be port numbers"
    [[ $qport != "$eport" ]] || die "the qmaster and execd ports must differ (both $qport)"
    port_used "$qport" && die "qmaster port $qport is already taken"
    port_used "$eport" && die "execd port $eport is already taken"
    printf 'SGE_QMASTER_PORT=%s\nSGE_EXECD_PORT=%s\n' "$qport" "$eport" >"$STATE/ports"
    use_cell
    mkdir -p "$COMMON"
    read -r -a names <<<"$(host_names)"
    host=${names[0]:-}
    [[ -n $host ]] || die "could not tell this host's name as Grid Engine resolves it"
    log "this host is '$host' to Grid Engine${names[1]:+ (aliases: ${names[*]:1})}"
    write_files "${names[@]}"
    init_spool
    log "starting sge_qmaster on port $qport"
    launch qmaster
    wait_for "$WAIT_S" qmaster_answers || die "sge_qmaster did not answer within ${WAIT_S}s"
    configure_cell "$host"
    log "starting sge_execd on port $eport"
    launch execd
    wait_for "$WAIT_S" queues_ok || {
        timeout 10 qstat -f >&2 || true
        die "the queues ${QUEUES[*]} did not come up within ${WAIT_S}s"
    }
    local left=$((WAIT_S - ($(now_ms) - t0) / 1000))
    ((left >= 10)) || left=10
    job_runs "$left" || { log_tail "$STATE/log/setup.log"; die "a test job (qsub -sync y true) did not run within ${left}s"; }
    write_env
    trap - EXIT
    log "ready in $(($(now_ms) - t0))ms: qmaster $host:$qport, queues ${QUEUES[*]} ($SLOTS slots each)"
}

# ---------------------------------------------------------------- commands
check_settings() {
    [[ $SLOTS =~ ^[1-9][0-9]*$ ]] || die "IDIGDASK_SGE_SLOTS must be a whole number, not '$SLOTS'"
    [[ $WAIT_S =~ ^[1-9][0-9]*$ ]] || die "IDIGDASK_SGE_WAIT_S must be a whole number, not '$WAIT_S'"
}

cmd_start() {
    install_sge
    if all_running; then
        use_cell
        if queues_ok; then
            cat "$STATE/env"
            return 0
        fi
    fi
    fresh_start
    cat "$STATE/env"
}

cmd_stop() {
    [[ -d $STATE ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
    stop_all
    rm -rf "$STATE"
    log "stopped; removed $STATE"
}

cmd_env() {
    all_running || die "not running (no live daemons in $STATE); run: ci/sge.sh start"
    cat "$STATE/env"
}

cmd_status() {
    local d ok=0 pid q out
    for d in qmaster execd; do
        if pid=$(pid_of "$d"); then echo "sge_$d: running (pid $pid)"
        else echo "sge_$d: stopped"; ok=3; fi
    done
    if [[ -r $STATE/ports ]] && running qmaster; then
        use_cell
        out=$(timeout 10 qstat -f 2>/dev/null) || { echo "qmaster: not answering"; return 3; }
        for q in "${QUEUES[@]}"; do
            if awk -v q="$q@" 'index($1, q) == 1 && NF == 5 {ok=1} END {exit !ok}' <<<"$out"; then
                echo "$q: ok"
            else echo "$q: not ok ($(awk -v q="$q@" 'index($1, q) == 1 {print $NF}' <<<"$out"))"; ok=3; fi
        done
    fi
    return $ok
}

main() {
    local cmd=${1:-}
    case $cmd in
        env) cmd_env; return ;;            # read-only: no root, no lock
        status) cmd_status; return ;;
        start) check_settings; require_root_debian ;;
        stop) require_root_debian ;;
        *) die "usage: ci/sge.sh start|stop|env|status" ;;
    esac
    # Serialise the commands that change a state folder (parallel runs, start vs stop).
    mkdir -p "$(dirname "$STATE")"
    exec 9>"$LOCK" || die "cannot open the lock file $LOCK"
    flock -w 600 9 || die "timed out waiting for the lock $LOCK"
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
    esac
}

main "$@"
