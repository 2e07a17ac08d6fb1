#!/usr/bin/env bash
# Run the whole suite with the real services it needs: starts the project's Ceph
# gateway (ci/ceph.sh), Slurm (ci/slurm.sh) and Grid Engine (ci/sge.sh), and stops
# them afterwards. Under CI=true a service that cannot start fails the run; elsewhere
# its tests skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONDONTWRITEBYTECODE=1

started_ceph=""
if [ -z "${IDIGDASK_S3_ENDPOINT:-}" ]; then
  if ceph_env="$(bash ci/ceph.sh start)"; then
    eval "$ceph_env"
    started_ceph=1
  elif [ "${CI:-}" = "true" ]; then
    echo "ci/test.sh: the Ceph gateway did not start; CI does not run without it" >&2
    exit 1
  else
    echo "ci/test.sh: the Ceph gateway did not start; its tests will skip" >&2
  fi
fi

# The batch systems: started unless their clients already answer.
started_batch=()
start_batch() {   # start_batch SCRIPT NAME CHECK...
    local script=$1 name=$2 env; shift 2
    "$@" >/dev/null 2>&1 && return 0
    if env="$(bash "ci/$script" start)"; then
        eval "$env"
        started_batch+=("$script")
    elif [ "${CI:-}" = "true" ]; then
        echo "ci/test.sh: $name did not start; CI does not run without it" >&2
        exit 1
    else
        echo "ci/test.sh: $name did not start; its tests will skip" >&2
    fi
}

cleanup() {
    local script
    for script in "${started_batch[@]}"; do bash "ci/$script" stop >&2 || true; done
    [ -n "$started_ceph" ] && bash ci/ceph.sh stop >&2 || true
}
trap cleanup EXIT
start_batch slurm.sh Slurm sinfo -h
start_batch sge.sh "Grid Engine" qstat -f
# The docs' browser tests: Debian's chromium and chromium-driver (skip without them; CI fails).
bash ci/chromium.sh || { [ "${CI:-}" = "true" ] && exit 1; echo "ci/test.sh: no chromium; the docs' browser tests will skip" >&2; }

"$BIN/python" -m pytest -ra --durations=30 "$@"
