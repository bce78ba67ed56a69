#!/bin/sh
# The Debian packages whose programs `make demo` and `make test` start privately (on loopback, on free ports),
# and python3-venv, without which `$PYTHON -m venv` cannot build .venv (Debian's python3 leaves ensurepip out):
# installs the missing ones when run as root, keeping their system services from starting; otherwise says in
# one line what to run and fails. Used by `make demo`, `make test` and `.ci/run`; `ensure-packages.sh venv`
# (before .venv is built, for every make target) asks for python3-venv alone.
set -eu
PATH="$PATH:/usr/sbin:/sbin"

missing=""
need() {  # need PROGRAM PACKAGE
  command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
"${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="python3-venv"
if [ "${1:-}" = venv ]; then
  [ -z "$missing" ] && exit 0
else
  need redis-server redis-server
  need redis-sentinel redis-sentinel
  need haproxy haproxy
  need nginx nginx
  need promtool prometheus  # promtool comes with prometheus
fi
missing="${missing# }"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "jit-lb: missing Debian packages: $missing; install them with: sudo apt-get install -y $missing" >&2
  exit 1
fi

# apt starts a package's service on install; a policy-rc.d that exits 101 forbids it. Only ours, only meanwhile.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# jit-lb devtools/ensure-packages.sh: no service starts while it installs\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
  trap 'exit 130' INT TERM
fi
echo "jit-lb: installing missing Debian packages: $missing" >&2
apt-get update -qq
# shellcheck disable=SC2086  # one word a package
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
