#!/usr/bin/env bash
# Side environment for the KServe v2 / Triton protocol tests and benchmark:
# .side-envs/triton/, a venv of its own with tritonclient[grpc]==2.41.0 (its wheel also
# ships bin/perf_analyzer). tritonclient 2.41.0 imports only with protobuf < 5, which
# conflicts with the project's pinned protobuf, so it cannot live in .venv: the tests run
# its client code as a subprocess with this venv's python against a real server.
#
# Idempotent: does nothing when the venv is complete (its stamp file exists).
# Usage: scripts/side_env/triton.sh [--perf-analyzer]
#   --perf-analyzer  also what bin/perf_analyzer needs at run time (benchmarks/kserve.py):
#                    libb64 (Debian package libb64-0d, extracted into the venv's lib/ when
#                    it is not installed system-wide) and libcudart.so.12 (PyPI wheel
#                    nvidia-cuda-runtime-cu12); `triton.sh --print-ld-path` prints the
#                    LD_LIBRARY_PATH perf_analyzer needs.
# On failure it prints "side env triton: FAILED at <step>" and exits 1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
ENV_DIR="$ROOT/.side-envs/triton"
PY="${PYTHON:-python3}"
TRITONCLIENT="tritonclient[grpc]==2.41.0"
STAMP="$ENV_DIR/.installed-2.41.0"
PERF_STAMP="$ENV_DIR/.perf-analyzer"

fail() { echo "side env triton: FAILED at $1 (scripts/side_env/triton.sh)" >&2; exit 1; }

cuda_lib_dir() {
  "$ENV_DIR/bin/python" - <<'PY'
import pathlib, nvidia.cuda_runtime as m
print(pathlib.Path(list(m.__path__)[0]) / "lib")
PY
}

if [[ "${1:-}" == "--print-ld-path" ]]; then
  echo "$ENV_DIR/lib/b64:$(cuda_lib_dir)"
  exit 0
fi

if [[ ! -f "$STAMP" ]]; then
  echo "side env triton: building $ENV_DIR ($TRITONCLIENT)"
  rm -rf "$ENV_DIR"
  "$PY" -m venv "$ENV_DIR" || fail "python -m venv"
  "$ENV_DIR/bin/python" -m pip install -q --upgrade pip || fail "pip upgrade"
  "$ENV_DIR/bin/python" -m pip install -q "$TRITONCLIENT" "protobuf<5" numpy \
    || fail "pip install $TRITONCLIENT protobuf<5 numpy"
  "$ENV_DIR/bin/python" -c "import tritonclient.grpc, numpy" || fail "import tritonclient.grpc"
  touch "$STAMP"
fi

if [[ "${1:-}" == "--perf-analyzer" && ! -f "$PERF_STAMP" ]]; then
  echo "side env triton: adding perf_analyzer's libraries"
  "$ENV_DIR/bin/python" -m pip install -q "nvidia-cuda-runtime-cu12" \
    || fail "pip install nvidia-cuda-runtime-cu12"
  mkdir -p "$ENV_DIR/lib/b64"
  if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && (apt-get download libb64-0d >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get download libb64-0d >/dev/null; })) \
      || fail "apt-get download libb64-0d"
    dpkg-deb -x "$tmp"/libb64-0d_*.deb "$tmp/x" || fail "dpkg-deb -x libb64-0d"
    cp -a "$tmp"/x/usr/lib/*/libb64.so.0d* "$ENV_DIR/lib/b64/" || fail "copy libb64.so.0d"
    rm -rf "$tmp"
  fi
  [[ -x "$ENV_DIR/bin/perf_analyzer" ]] || fail "find bin/perf_analyzer in the tritonclient wheel"
  missing="$(LD_LIBRARY_PATH="$ENV_DIR/lib/b64:$(cuda_lib_dir)" ldd "$ENV_DIR/bin/perf_analyzer" \
    | grep 'not found' || true)"
  [[ -z "$missing" ]] || fail "perf_analyzer's libraries: $missing"
  touch "$PERF_STAMP"
fi
echo "side env triton: ready ($ENV_DIR)"
