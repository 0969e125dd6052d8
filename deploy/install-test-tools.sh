#!/usr/bin/env bash
# Installs the Python tools of the deployment tests (hadolint, kubernetes-validate, PyYAML for
# deploy/kubernetes/generate-prometheusrule.py), pinned in deploy/tools-requirements.txt, into a
# venv, and prints the venv's bin directory for PATH:
#
#   deploy_tools_bin="$(deploy/install-test-tools.sh)"
#   export PATH="$deploy_tools_bin:$PATH"
#
# The venv is kept outside the work tree (DEPLOY_TOOLS_VENV, default
# ~/.cache/office365-activations-exporter/deploy-tools) and made again only when
# tools-requirements.txt changes, so the install (about a minute: kubernetes-validate carries
# the schemas of every Kubernetes version) is paid once per machine.
# kubectl (for `kubectl kustomize`) and systemd-analyze come from the machine image.
set -euo pipefail
requirements="$(cd "$(dirname "$0")" && pwd)/tools-requirements.txt"
venv="${DEPLOY_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/office365-activations-exporter/deploy-tools}"
if ! cmp -s "$requirements" "$venv/tools-requirements.txt" \
  || ! "$venv/bin/hadolint" --version >/dev/null 2>&1; then
  echo "==> installing deploy/tools-requirements.txt (PyPI) into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r "$requirements" >&2
  cp "$requirements" "$venv/tools-requirements.txt"
fi
echo "$venv/bin"
