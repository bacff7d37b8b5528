#!/usr/bin/env bash
# Install Debian's SLURM (controller, node daemon, client, accounting) and munge/mariadb, without
# starting any daemon (start.sh does that, on a config of its own). Idempotent; root only.
set -euo pipefail
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && command -v mariadbd >/dev/null; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "tests/slurm/install.sh: needs root (apt-get)" >&2; exit 1; }
# No daemon may start during the install (no systemd here; policy-rc.d 101 = "don't start").
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
fi
trap '[ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o Acquire::Retries=3 || apt-get update -qq -o Acquire::Retries=3
apt-get install -y -qq --no-install-recommends -o Acquire::Retries=3 "${PKGS[@]}" >/dev/null
echo "installed: $(sbatch --version)"
