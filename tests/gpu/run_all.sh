#!/usr/bin/env bash
# GPU session for the testbed engine: environment, GPU tests, full-size profiles.
# Usage: tests/gpu/run_all.sh OUT_DIR [MODEL ...]   (run from the repository root)
# Writes OUT_DIR/env.txt, OUT_DIR/pytest.txt and OUT_DIR/<gpu>-<model>-fp16.csv per model.
set -u
out=${1:?output folder}; shift
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)"
  date -u +%Y-%m-%dT%H:%MZ; } 2>&1 | tee "$out/env.txt"
$py -m pytest -q -p no:cacheprovider tests/gpu tests/test_testbed_engine.py tests/test_testbed_profile.py 2>&1 | tee "$out/pytest.txt"
gpu=$($py -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
for m in "$@"; do
  echo "== profile $m"
  $py -c "from testbed.cli import main; main()" profile --model "$m" --device cuda --dtype fp16 \
      --quiet -o "$out/$gpu-$m-fp16.csv" 2>&1 | tee -a "$out/profile.txt"
done
