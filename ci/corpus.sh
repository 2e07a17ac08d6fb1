#!/usr/bin/env bash
# The third-party image corpus of tests/pipeline/test_decode_corpus.py: Pillow's
# Tests/images from its source distribution on PyPI, for the installed Pillow version.
#
#   ci/corpus.sh          fetch it into the cache if missing, decode every file, print the tally
#   ci/corpus.sh path     print the cache folder (CI caches it between runs)
#
# Settings (environment):
#   IDIGDASK_CORPUS_CACHE  cache folder (default ~/.cache/idigdask/corpus)
#   PYTHON                 interpreter (default .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
case "${1:-report}" in
  path) echo "${IDIGDASK_CORPUS_CACHE:-$HOME/.cache/idigdask/corpus}" ;;
  report) exec "$PYTHON" tests/pipeline/test_decode_corpus.py --report ;;
  *) echo "usage: ci/corpus.sh [report|path]" >&2; exit 2 ;;
esac
