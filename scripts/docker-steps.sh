#!/usr/bin/env bash
# The build steps of the Dockerfile, one function per RUN line, so that they can run without a
# Docker engine: test/dockerfile.test.ts replays the Dockerfile's COPY/ENV/RUN instructions in a
# temporary directory and calls these functions exactly as the Dockerfile does.
#
#   bash scripts/docker-steps.sh FUNCTION [ARGS...]
#
# Every function works on the current directory (the Dockerfile's WORKDIR). Absolute paths outside
# it are prefixed with $DOCKER_STEPS_ROOT, which is empty in a real image build and a temporary
# directory in the test.
set -euo pipefail

root="${DOCKER_STEPS_ROOT:-}"

# Build stage, before the sources are copied: every dependency, from the lockfile. Install scripts
# are skipped (they are not needed to compile, and `prepare` would run tsc before src/ is there).
install_build_deps() {
  npm ci --ignore-scripts --no-audit --no-fund
}

# Build stage, after `COPY . .`: compile TypeScript into dist/.
build_app() {
  npm run build
  test -f dist/src/cli/main.js || { echo "docker-steps: dist/src/cli/main.js was not built" >&2; exit 1; }
}

# Model stage: MODEL is a Hugging Face repository id, or `demo` for the bundled models/demo.
# The model ends up in models/$MODEL, and every policy prompt of the example policies is embedded
# with it, so that a model that does not load fails the build rather than the first pod.
fetch_model() {
  local model="${1:?fetch_model MODEL [REVISION] [VARIANT]}" revision="${2:-}" variant="${3:-}"
  if [[ ! "$model" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$ || "$model" == *..* ]]; then
    echo "docker-steps: MODEL must be \`demo\` or a Hugging Face repository id like Xenova/clip-vit-base-patch32, not \"$model\"" >&2
    exit 2
  fi
  local cli=(node dist/src/cli/main.js)
  local variant_flag=()
  if [[ -n "$variant" ]]; then variant_flag=(--variant "$variant"); fi
  if [[ "$model" == demo ]]; then
    test -f models/demo/config.json || { echo "docker-steps: models/demo is missing from the build context (.dockerignore?)" >&2; exit 1; }
  else
    local revision_flag=()
    if [[ -n "$revision" ]]; then revision_flag=(--revision "$revision"); fi
    "${cli[@]}" model pull "$model" --dir "models/$model" "${revision_flag[@]}" "${variant_flag[@]}"
  fi
  "${cli[@]}" policies check examples/policies.yaml --model "models/$model" "${variant_flag[@]}"
}

# Runtime stage, before the build output is copied: production dependencies only. `prepare` (tsc)
# is a devDependency, hence --ignore-scripts; the native packages (onnxruntime-node, sharp) ship
# their binaries inside the npm packages and need no install script.
install_runtime_deps() {
  npm ci --omit=dev --ignore-scripts --no-audit --no-fund
}

# Runtime stage, after dist/ and models/ are copied: put `clipguard` on the PATH (what npm would
# do for a global install) and check that it starts with production dependencies only.
finish_runtime() {
  chmod 0755 dist/src/cli/main.js
  mkdir -p "$root/usr/local/bin"
  ln -sf "$PWD/dist/src/cli/main.js" "$root/usr/local/bin/clipguard"
  "$root/usr/local/bin/clipguard" --version
}

steps=(install_build_deps build_app fetch_model install_runtime_deps finish_runtime)
step="${1:-}"
if [[ -z "$step" || ! " ${steps[*]} " == *" $step "* ]]; then
  echo "usage: $0 {$(IFS='|'; echo "${steps[*]}")} [ARGS...]" >&2
  exit 2
fi
shift
"$step" "$@"
