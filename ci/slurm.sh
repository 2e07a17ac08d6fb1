#!/usr/bin/env bash
# A throw-away Slurm cluster for the tests (dask-jobqueue): munged, slurmctld and
# one slurmd on this machine, run as plain background processes.
#
#   ci/slurm.sh start    install Slurm and MUNGE if missing, start them, print the env
#   ci/slurm.sh stop     cancel every job, stop the daemons, remove the state folder
#   ci/slurm.sh env      print the env (exit 1 when not running)
#   ci/slurm.sh status   one line per daemon (exit 3 when not all running)
#
# `eval "$(ci/slurm.sh start)"` sets SLURM_CONF (the clients' config: sinfo,
# sbatch, squeue, scancel, scontrol, srun) and IDIGDASK_SLURM_DIR; progress goes to
# stderr. The clients find the MUNGE socket through AuthInfo in that config.
#
# The cluster: one node (this machine, exactly as `slurmd -C` describes it) in two
# partitions, "debug" (the default) and "batch", both without a time limit. Jobs
# start about a second after submission. There is no slurmdbd, so `sacct` fails
# ("Slurm accounting storage is disabled"): use
# `squeue`, `scontrol show job ID` (finished jobs stay listed MinJobAge=60 s) and
# the job completion file $IDIGDASK_SLURM_DIR/log/jobcomp.txt (one line a job).
# Memory use is gathered (`sstat -j ID.batch` while a job runs) but not enforced:
# a job may use more than its --mem. Jobs that ask for no memory get 1 GiB a CPU.
#
# Settings (environment):
#   IDIGDASK_SLURM_DIR     state folder (default /tmp/idigdask-slurm)
#   IDIGDASK_SLURM_WAIT_S  how long `start` waits for the cluster (default 60)
#
# Needs root on Debian (apt-get); no systemd, no containers. Everything listens on
# 127.0.0.1 only and every file lives in the state folder.
set -euo pipefail

STATE="${IDIGDASK_SLURM_DIR:-/tmp/idigdask-slurm}"
STATE="${STATE%/}"
CONF="$STATE/slurm.conf"
KEY="$STATE/munge/munge.key"
SOCKET="$STATE/run/munge.socket"
PIDS="$STATE/pids"
LOCK="$STATE.lock"          # beside the state folder: `stop` removes the folder
PACKAGES=(slurmctld slurmd slurm-client munge)
COMMANDS=(slurmctld slurmd sinfo squeue sbatch srun scancel scontrol munged mungekey munge unmunge)
DAEMONS=(munged slurmctld slurmd)
WAIT_S="${IDIGDASK_SLURM_WAIT_S:-60}"
# Set in the daemons' environment only, and so inherited by the slurmstepd
# processes slurmd starts: `stop` finds any that outlive slurmd by it.
MARK="IDIGDASK_SLURM_DAEMON=$STATE"

log() { printf 'slurm.sh: %s\n' "$*" >&2; }
die() { printf 'slurm.sh: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- installation
require_root_debian() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs Slurm daemons)"
    command -v apt-get >/dev/null && [[ -r /etc/debian_version ]] \
        || die "needs Debian with apt-get (found no /etc/debian_version or apt-get)"
}

slurm_installed() {
    local c
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || return 1; done
}

install_slurm() {
    slurm_installed && return 0
    log "installing ${PACKAGES[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    # The packages' scripts would start the system's munged, slurmctld and slurmd
    # (init scripts, /etc/munge, /etc/slurm) where no policy forbids it: forbid it
    # for this install only, as Docker images do, and take that policy away after.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# Written by ci/slurm.sh during apt-get install.\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
        trap "rm -f '$policy'" EXIT
    fi
    # A fresh machine has no package lists yet: update only when apt cannot see Slurm.
    if ! apt-cache show slurmctld >/dev/null 2>&1; then
        apt-get update -q >&2 || die "apt-get update failed"
    fi
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends \
                "${PACKAGES[@]}" >&2; } \
        || die "apt-get install ${PACKAGES[*]} failed"
    if [[ -n $added_policy ]]; then rm -f "$policy"; trap - EXIT; fi
    hash -r
    slurm_installed || die "Slurm packages installed but commands missing: ${COMMANDS[*]}"
}

# ---------------------------------------------------------------- processes
# What each daemon's command line holds: a recorded pid counts only while it still
# runs that daemon with our files, so a reused pid is never signalled.
marker() { if [[ $1 == munged ]]; then echo "$KEY"; else echo "$CONF"; fi; }

pid_of() {
    local f="$PIDS/$1" pid
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$(marker "$1")" || return 1
    echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# Start a daemon in the foreground in its own session, so it survives the caller's
# terminal and signals, and record its pid. (No job control here, so setsid needs
# no fork and $! is the daemon itself.)
launch() {
    local name=$1; shift
    # fd 9 is the command lock: the daemons must not hold it.
    env "$MARK" setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 9>&- &
    echo $! >"$PIDS/$name"
}

# /proc/PID/stat after the command name: state, parent, ... (the name may hold
# spaces and parentheses, so split after its last ")").
proc_stat() {
    local stat
    stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
    echo "${stat##*) }"
}

# A zombie counts as gone: it runs nothing, and where no init reaps orphans (some
# sandboxes) it would stay listed for good.
alive() {
    local st
    st=$(proc_stat "$1") || return 1
    [[ ${st%% *} != Z ]]
}

wait_gone() {   # wait_gone PID TENTHS: true once PID has ended
    local i
    for ((i = 0; i < $2; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    ! alive "$1"
}

stop_daemon() {   # stop_daemon NAME [GRACE_SECONDS]
    local name=$1 grace=${2:-10} pid
    pid=$(pid_of "$name") || { rm -f "$PIDS/$name"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" $((grace * 10)); then   # then force
        log "$name did not stop in ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 50 || true
    fi
    rm -f "$PIDS/$name"
}

# Processes left from this cluster once its daemons are gone (a daemon killed or
# crashed): slurmstepd (it still holds slurmd's log file open; its environment is
# overwritten by its process title) and job processes (SLURM_CONF is ours and they
# have a job id). Never this script or its callers.
leftovers() {
    local p env st ancestors=" " a=$$
    while [[ $a =~ ^[0-9]+$ && $a -gt 1 ]]; do
        ancestors+="$a "
        st=$(proc_stat "$a") || break
        st=${st#* }
        a=${st%% *}
    done
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $ancestors == *" $p "* ]] && continue
        alive "$p" || continue
        if [[ $(cat 2>/dev/null "/proc/$p/comm") == slurmstepd ]]; then
            if find "/proc/$p/fd" -mindepth 1 -maxdepth 1 -lname "$STATE/*" 2>/dev/null | grep -q .; then
                echo "$p"
            fi
            continue
        fi
        env=$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ") || continue
        if grep -qxF -- "$MARK" <<<"$env" \
            || { grep -qxF -- "SLURM_CONF=$CONF" <<<"$env" && grep -q '^SLURM_JOB_ID=' <<<"$env"; }; then
            echo "$p"
        fi
    done
}

kill_leftovers() {
    local pids p
    pids=$(leftovers)
    [[ -n $pids ]] || return 0
    log "killing leftover processes: $(tr '\n' ' ' <<<"$pids")"
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    for p in $pids; do wait_gone "$p" 50 || true; done
}

log_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# Each daemon's log file, or what it printed where that is empty (slurmctld and
# slurmd print their log lines to both; munged -F logs to stderr only).
all_logs() {
    local d
    for d in munged slurmctld slurmd; do
        if [[ -s $STATE/log/$d.log ]]; then log_tail "$STATE/log/$d.log"
        else log_tail "$STATE/log/$d.out"; fi
    done
    log_tail "$STATE/log/cli.err"
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
free_port() {   # free_port [A PORT NOT TO PICK]
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $p == "${1:-}" ]] && continue
        port_used "$p" || { echo "$p"; return 0; }
    done
    die "found no free TCP port in 20000-31999"
}

# ---------------------------------------------------------------- cluster
cli() { SLURM_CONF="$CONF" timeout 20 "$@" 2>>"$STATE/log/cli.err"; }

write_conf() {
    local ctld_port=$1 slurmd_port=$2 node cpus mem def_mem host
    host=$(hostname -s)
    # The node exactly as slurmd sees it: a lower RealMemory or fewer CPUs than the
    # machine has would drain the node ("Low RealMemory").
    node=$(slurmd -C 2>>"$STATE/log/setup.log" | head -n 1)
    [[ $node == NodeName=* ]] || { log_tail "$STATE/log/setup.log"; die "slurmd -C printed no node line"; }
    cpus=$(grep -oE '(^| )CPUs=[0-9]+' <<<"$node" | cut -d= -f2)
    mem=$(grep -oE '(^| )RealMemory=[0-9]+' <<<"$node" | cut -d= -f2)
    [[ -n $cpus && -n $mem ]] || die "no CPUs or RealMemory in the node line '$node'"
    # Memory is a consumable: a job that asks for none would otherwise hold the
    # whole node. 1 GiB a CPU by default, less on a small machine.
    def_mem=$((mem / cpus))
    ((def_mem > 1024)) && def_mem=1024
    cat >"$CONF" <<EOF
# Written by ci/slurm.sh: a one-node test cluster, 127.0.0.1 only.
ClusterName=idigdask
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
# MUNGE: our own munged, key and socket (not /etc/munge, /run/munge).
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
# No cgroups: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
ReturnToService=2
# Jobs start at submission (the main scheduler runs then); backfill every second.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=100000
# Short timeouts for tests; finished jobs stay visible to scontrol for a minute.
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
MessageTimeout=10
# Memory use is gathered (sstat while a job runs); no slurmdbd, so no sacct: a
# text line per finished job instead.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
MailProg=/bin/true
# Every file inside the state folder.
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$STATE/plugstack.conf

$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$host MaxTime=INFINITE State=UP
EOF
    : >"$STATE/plugstack.conf"   # no SPANK plugins (not /etc/slurm/plugstack.conf)
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

munge_ready() {
    running munged && timeout 10 munge -n -S "$SOCKET" 2>>"$STATE/log/cli.err" \
        | timeout 10 unmunge -S "$SOCKET" >/dev/null 2>>"$STATE/log/cli.err"
}
ctld_ready() { running slurmctld && cli scontrol ping | grep -q 'is UP'; }
node_idle() {
    running slurmd && [[ $(cli sinfo -h -N -o '%t' | sort -u) == idle ]]
}

start_munged() {
    mkdir -p "$STATE/munge"
    chmod 700 "$STATE/munge"
    timeout 30 mungekey --create --keyfile "$KEY" >>"$STATE/log/setup.log" 2>&1 \
        || { log_tail "$STATE/log/setup.log"; die "mungekey --create failed"; }
    chmod 600 "$KEY"
    launch munged munged -F --key-file "$KEY" --socket "$SOCKET" \
        --pid-file "$STATE/run/munged.pid" --log-file "$STATE/log/munged.log" \
        --seed-file "$STATE/munge/munged.seed"
    wait_for "$WAIT_S" munge_ready || { all_logs; die "munged did not answer within ${WAIT_S}s"; }
}

start_slurm() {
    launch slurmctld slurmctld -D -c -f "$CONF"
    wait_for "$WAIT_S" ctld_ready || { all_logs; die "slurmctld did not answer within ${WAIT_S}s"; }
    launch slurmd slurmd -D -f "$CONF"
    wait_for "$WAIT_S" node_idle || {
        cli sinfo -N -l >&2 || true
        all_logs
        die "the node was not idle within ${WAIT_S}s"
    }
}

# One real job through the whole path (submission, credential, slurmstepd, launch).
test_job() {
    cli srun -p debug -N 1 -n 1 -t 1 --mem=16 -J idigdask-selftest true >&2 \
        || { all_logs; die "a test job (srun true) failed"; }
}

write_env() {
    cat >"$STATE/env" <<EOF
export SLURM_CONF=$CONF
export IDIGDASK_SLURM_DIR=$STATE
EOF
}

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do running "$d" || return 1; done
    [[ -r $STATE/env ]]
}

cancel_jobs() {
    running slurmctld || return 0
    local ids
    ids=$(cli squeue -h -o '%i') || return 0
    [[ -n $ids ]] || return 0
    log "cancelling jobs: $(tr '\n' ' ' <<<"$ids")"
    # shellcheck disable=SC2086  # one word a job id
    cli scancel --full $ids || true
    # Until slurmctld no longer lists them as running or completing (KillWait=5).
    wait_for 15 jobs_gone || log "jobs still listed after 15s: going on"
}
jobs_gone() { [[ -z $(cli squeue -h -t R,CG,S,CF -o '%i') ]]; }

stop_all() {
    cancel_jobs
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    kill_leftovers
}

fresh_start() {
    local t0 ctld_port slurmd_port
    t0=$(now_ms)
    if [[ -d $STATE ]]; then
        log "clearing a stale state folder $STATE"
        stop_all
        rm -rf "$STATE"
    fi
    mkdir -p "$STATE"/{log,run,ctld,spool} "$PIDS"
    chmod 755 "$STATE" "$STATE/run" "$STATE/log"
    # On any failure below, stop what was started (the logs stay for a look).
    trap 'stop_all; log "start failed; logs kept in $STATE/log"' EXIT
    ctld_port=$(free_port)
    slurmd_port=$(free_port "$ctld_port")
    write_conf "$ctld_port" "$slurmd_port"
    log "starting munged"
    start_munged
    log "starting slurmctld on 127.0.0.1:$ctld_port and slurmd on 127.0.0.1:$slurmd_port"
    start_slurm
    test_job
    write_env
    trap - EXIT
    log "ready in $(( ($(now_ms) - t0) ))ms: SLURM_CONF=$CONF"
}

# ---------------------------------------------------------------- commands
check_settings() {
    [[ $WAIT_S =~ ^[1-9][0-9]*$ ]] || die "IDIGDASK_SLURM_WAIT_S must be a whole number, not '$WAIT_S'"
    # A Unix socket's path holds at most 107 bytes.
    ((${#SOCKET} < 108)) || die "IDIGDASK_SLURM_DIR is too long for the MUNGE socket path $SOCKET"
}

cmd_start() {
    install_slurm
    if all_running && ctld_ready; then
        cat "$STATE/env"
        return 0
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
    all_running || die "not running (no live daemons in $STATE); run: ci/slurm.sh start"
    cat "$STATE/env"
}

cmd_status() {
    local d ok=0 pid
    for d in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$d"); then echo "$d: running (pid $pid)"
        else echo "$d: stopped"; ok=3; fi
    done
    if running slurmctld && [[ -r $CONF ]]; then
        echo "node: $(SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u | tr '\n' ' ')"
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
        *) die "usage: ci/slurm.sh start|stop|env|status" ;;
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
