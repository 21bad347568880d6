#!/usr/bin/env bash
# Side environment of the peer benchmark (benchmarks/peer.py): .side-envs/ultralytics/, a venv
# with Ultralytics, whose `yolo` command line trains and exports the peer (YOLO11n). It is
# AGPL-3.0: the project never imports it; the benchmark runs its CLI as an external tool.
#
# torch==2.14.1 and torchvision==0.29.1: from TORCH_INDEX when set (as for `make venv`, e.g.
# https://download.pytorch.org/whl/cpu: the CPU builds), else the index's default builds,
# which bring CUDA libraries (several GB; they run on the CPU). The project's CPU torch 2.13
# is not enough: Ultralytics validates with torchvision's NMS, and the index's torchvision
# wheels link torch's CUDA libraries (libtorch_cuda.so), which a CPU build of torch lacks.
# Also onnx, onnxslim and onnxruntime (what `yolo export format=onnx` checks for, so that it
# never tries to install them), and an offline config: YOLO_CONFIG_DIR=.side-envs/ultralytics/
# config with the font Ultralytics would otherwise download (DejaVuSans.ttf as Arial.ttf) and
# sync off. Last step: a random-weight YOLO11n exported to ONNX offline.
#
# Idempotent: does nothing when the stamp holds this script's hash and `yolo` runs.
#   bash scripts/side_env/ultralytics.sh               # build or check
#   TORCH_INDEX=URL bash scripts/side_env/ultralytics.sh   # torch from that index
#   bash scripts/side_env/ultralytics.sh --print-env   # the env variables the CLI needs
# On failure it prints "side env ultralytics: FAILED at <step>", writes it to
# .side-envs/ultralytics/FAILED and exits 1.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ENV_DIR=${ULTRALYTICS_SIDE_ENV:-$ROOT/.side-envs/ultralytics}
PY=$ENV_DIR/bin/python
CONFIG=$ENV_DIR/config
ULTRALYTICS="ultralytics==8.4.190"
EXPORT_PACKAGES=("onnx>=1.12" "onnxslim>=0.1.82" "onnxruntime")
TORCH=("torch==2.14.1" "torchvision==0.29.1")
TORCH_INDEX=${TORCH_INDEX:-}
STAMP=$ENV_DIR/stamp
ENV_VARS="YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$CONFIG"

if [[ "${1:-}" == "--print-env" ]]; then
    echo "$ENV_VARS"
    exit 0
fi

fail() {
    local line="side env ultralytics: FAILED at $1 (scripts/side_env/ultralytics.sh)"
    mkdir -p "$ENV_DIR"
    echo "$line" > "$ENV_DIR/FAILED"
    echo "$line" >&2
    exit 1
}

step() {  # step "what" command...: runs it, log in $ENV_DIR/<what>.log; fails with the log's tail
    local what=$1 log
    shift
    log=$ENV_DIR/$(echo "$what" | tr -c 'a-z0-9\n' '-').log
    echo "side env ultralytics: $what"
    if ! "$@" > "$log" 2>&1; then
        tail -n 20 "$log" >&2
        fail "$what (log: ${log#"$ROOT"/})"
    fi
}

torch_works() {  # torch and torchvision import, and torchvision's compiled NMS runs
    env $ENV_VARS "$PY" - <<'PY'
import torch, torchvision
from torchvision.ops import nms
keep = nms(torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10.0]]), torch.tensor([0.9, 0.8]), 0.5)
assert keep.tolist() == [0], keep
print("torch", torch.__version__, "torchvision", torchvision.__version__)
PY
}

HASH=$(sha256sum "$0" | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$HASH" && -s $CONFIG/Ultralytics/Arial.ttf ]] &&
    env $ENV_VARS "$ENV_DIR/bin/yolo" version > /dev/null 2>&1; then
    echo "side env ultralytics: up to date (${ENV_DIR#"$ROOT"/})"
    exit 0
fi
rm -rf "$ENV_DIR"
mkdir -p "$ENV_DIR"
step "create the venv" python3 -m venv "$ENV_DIR"
step "upgrade pip" "$PY" -m pip install -q --upgrade pip
if [[ -n $TORCH_INDEX ]]; then
    step "install ${TORCH[*]} from $TORCH_INDEX" "$PY" -m pip install -q --index-url "$TORCH_INDEX" "${TORCH[@]}"
else
    step "install ${TORCH[*]}" "$PY" -m pip install -q "${TORCH[@]}"
fi
step "check torch and torchvision" torch_works
step "install $ULTRALYTICS and the ONNX export's packages" \
    "$PY" -m pip install -q "$ULTRALYTICS" "${EXPORT_PACKAGES[@]}"
step "check torch was kept" torch_works
# importing ultralytics may print a settings notice first: the directory is the last line
config_dir=$(env $ENV_VARS "$PY" -c "from ultralytics.utils import USER_CONFIG_DIR; print(USER_CONFIG_DIR)" 2> "$ENV_DIR/config.log" | tail -n 1)
[[ $config_dir == "$CONFIG"/* ]] || fail "find Ultralytics' config directory under $CONFIG (got '$config_dir'; log: ${ENV_DIR#"$ROOT"/}/config.log)"
font=$("$PY" -c "import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / 'fonts/ttf/DejaVuSans.ttf')")
mkdir -p "$config_dir"
cp "$font" "$config_dir/Arial.ttf" || fail "copy $font to $config_dir/Arial.ttf"
step "turn Ultralytics' sync off" env $ENV_VARS "$ENV_DIR/bin/yolo" settings sync=False
mkdir -p "$ENV_DIR/check"
step "export a random-weight YOLO11n to ONNX offline" bash -c \
    "cd '$ENV_DIR/check' && env $ENV_VARS '$ENV_DIR/bin/yolo' export model=yolo11n.yaml format=onnx imgsz=64 device=cpu && test -s yolo11n.onnx"
rm -rf "$ENV_DIR/check"
"$PY" -m pip list 2> /dev/null | grep -i -E '^(torch|torchvision|ultralytics|onnx|onnxslim|onnxruntime) ' > "$ENV_DIR/versions.txt"
echo "$HASH" > "$STAMP"
rm -f "$ENV_DIR/FAILED"
echo "side env ultralytics: built (${ENV_DIR#"$ROOT"/}, $(du -sh "$ENV_DIR" | cut -f1)): $(tr '\n' ' ' < "$ENV_DIR/versions.txt")"
