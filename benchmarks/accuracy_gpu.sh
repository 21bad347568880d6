#!/usr/bin/env bash
# The accuracy benchmark on one CUDA GPU machine (16 CPU cores), in one sitting:
# the gpu-marked tests and the synth data in parallel, then every run of
# `python -m benchmarks.accuracy`, six at a time sharing the GPU, under a time limit
# (a run cut off by the limit leaves no row; rerunning resumes from the JSON).
#
#   benchmarks/accuracy_gpu.sh OUT_DIR [SECONDS]
set -u -o pipefail
out=${1:?usage: benchmarks/accuracy_gpu.sh OUT_DIR [SECONDS]}
limit=${2:-540}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/understudy-cache}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >>"$out/gpu.txt"
timeout 240 $py -m pytest -q -m gpu -p no:cacheprovider tests/distill/test_gpu.py \
  >"$out/gpu_tests.log" 2>&1 &
tests=$!
if [ ! -f data/synth/data.yaml ]; then
  $py - <<'PY' >"$out/synth.log" 2>&1
from distill.data.synth import generate
from distill.data.synth_config import load_synth_config
generate("data/synth", 0, load_synth_config("configs/synth_standard.yaml"))
PY
fi
$py - <<'PY' >>"$out/gpu.txt"
import hashlib, pathlib
h = hashlib.sha256()
for p in sorted(pathlib.Path("data/synth/labels").rglob("*.txt")):
    h.update(p.read_bytes())
print("synth labels sha256", h.hexdigest())
PY
wait $tests
tail -3 "$out/gpu_tests.log"
timeout $((limit - SECONDS)) $py -m benchmarks.accuracy --runs /tmp/understudy-runs \
  --out "$out/accuracy.json" --jobs 6 --set workers=2 --set eval_every=0 \
  2>&1 | grep -v " step " >"$out/accuracy.log"
tar czf "$out/runs.tgz" -C /tmp/understudy-runs --wildcards '*/metrics.jsonl' '*.log' 2>/dev/null
tail -5 "$out/accuracy.log"
exit 0
