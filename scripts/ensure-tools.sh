#!/usr/bin/env bash
# Installs (once) the Debian tools the daemon's tests use: `prometheus`
# (the server and promtool) and `systemd` (systemd-analyze). Idempotent: a
# tool already on PATH is not reinstalled. Usage: ensure-tools.sh NAME...
set -euo pipefail
need=()
for t in "$@"; do
    case "$t" in
        prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus) ;;
        systemd) command -v systemd-analyze >/dev/null || need+=(systemd) ;;
        *) echo "ensure-tools.sh: unknown tool $t" >&2; exit 2 ;;
    esac
done
[[ ${#need[@]} -eq 0 ]] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "ensure-tools.sh: ${need[*]} missing and no apt-get to install them" >&2
    exit 1
fi
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
# Serialise concurrent test processes installing at once.
exec 9>/tmp/basalt-ensure-tools.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
# Never start the packaged services (a policy-rc.d that says no).
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get update -qq >&2 || true
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
