#!/bin/sh
# Install cbcm into a virtual environment from the lock: every dependency pinned and checked
# against its hash, then cbcm's own wheel without resolving anything more. The Containerfile
# runs this, the operator guide's host install runs this, and the test suite runs it on a
# clean Debian made with debootstrap (tests/deploy).
#
#   deploy/install.sh requirements.lock dist/cbcm-<version>-py3-none-any.whl [/opt/cbcm]
set -eu
lock=${1:?the lock file (requirements.lock)}
wheel=${2:?the cbcm wheel (pip wheel --no-deps -w dist .)}
prefix=${3:-/opt/cbcm}

python3 -m venv "$prefix"
"$prefix/bin/python" -m pip install --no-cache-dir --quiet --require-hashes -r "$lock"
"$prefix/bin/python" -m pip install --no-cache-dir --quiet --no-deps "$wheel"
"$prefix/bin/cbcm" --help > /dev/null
echo "cbcm installed in $prefix"
