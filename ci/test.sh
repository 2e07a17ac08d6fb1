#!/usr/bin/env bash
# Run the whole suite with the real services it needs: starts the project's Ceph
# gateway (ci/ceph.sh) and stops it afterwards. Under CI=true a service that cannot
# start fails the run; elsewhere its tests skip with the reason.
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
cleanup() { [ -n "$started_ceph" ] && bash ci/ceph.sh stop >&2 || true; }
trap cleanup EXIT

"$BIN/python" -m pytest -ra "$@"
