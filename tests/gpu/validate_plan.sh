#!/usr/bin/env bash
# One GPU session for the testbed (issue 5): GPU tests, opt-1.3b decode before/after the
# decode workspace, a fresh opt-1.3b profile, and `testbed validate` of the committed plan
# on cuda (1 prefill + 1 decode worker sharing the one GPU, cuda-ipc KV), twice.
# Usage (repository root): bash tests/gpu/validate_plan.sh OUT
# Needs python3 with torch (CUDA), transformers, numpy, pandas, scipy, click, tqdm; not
# pulp/highspy (the plan was made on a CPU machine: docs/profiles/h100-opt-1.3b-plan.json).
# Whole run under 8 minutes: every step has a time limit from a global budget.
set -u
out=${1:?usage: validate_plan.sh OUT}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
budget=${BUDGET_S:-450}
plan=docs/profiles/h100-opt-1.3b-plan.json
trace=docs/profiles/h100-opt-1.3b-trace.csv

left() { echo $(( budget - SECONDS )); }
cap() { local l; l=$(left); (( l > $1 )) && echo "$1" || echo $(( l > 5 ? l : 5 )); }
tb=("$py" -c "from testbed.cli import main; main()")    # `testbed ...` without an installed entry point
step() { echo "== $1 ($(date -u +%H:%M:%S), ${SECONDS}s used, limit $2 s)" | tee -a "$out/steps.txt"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)"
  "$py" -c "import scipy, pandas; print('scipy', scipy.__version__, 'pandas', pandas.__version__)"
  nproc; date -u +%Y-%m-%dT%H:%MZ; } > "$out/env.txt" 2>&1
cat "$out/env.txt"

t=$(cap 120); step "GPU and engine tests" "$t"
timeout "$t" "$py" -m pytest -q -p no:cacheprovider tests/gpu tests/test_testbed_engine.py \
    tests/test_testbed_validate.py > "$out/pytest.txt" 2>&1
echo "rc=$?" >> "$out/pytest.txt"; tail -3 "$out/pytest.txt"

# after: the full default CUDA grid with the workspace decode (also the profile the
# validation re-fits the plan's model to)
t=$(cap 150); step "profile opt-1.3b (decode workspace, full grid)" "$t"
timeout "$t" "${tb[@]}" profile --model opt-1.3b --device cuda --dtype fp16 --quiet \
    -o "$out/h100-opt-1.3b-fp16.csv" > "$out/profile.txt" 2>&1
echo "rc=$?" >> "$out/profile.txt"; tail -6 "$out/profile.txt"

# before: the same decode grid on the previous per-layer gather (prefill/kv minimal)
t=$(cap 90); step "decode profile opt-1.3b (previous gather path)" "$t"
timeout "$t" "${tb[@]}" profile --model opt-1.3b --device cuda --dtype fp16 --quiet --decode-path gather \
    --prefill-tokens 16 --prefill-context 0 --prefill-slices 1 --kv-tokens 16,64 --classifier-layers 0 \
    -o "$out/decode-gather.csv" > "$out/profile-gather.txt" 2>&1
echo "rc=$?" >> "$out/profile-gather.txt"; tail -4 "$out/profile-gather.txt"

refit=()
if [ -s "$out/h100-opt-1.3b-fp16.csv" ] && "$py" -c "import scipy" 2>/dev/null; then
  refit=(--profile "$out/h100-opt-1.3b-fp16.csv")
fi
for run in 1 2; do
  t=$(cap 110)
  if (( t < 60 )); then echo "== validate run $run skipped: ${t}s left" | tee -a "$out/steps.txt"; continue; fi
  step "validate run $run ${refit[*]:+(model re-fitted to the fresh profile)}" "$t"
  timeout "$t" "${tb[@]}" validate --plan "$plan" --trace "$trace" --device cuda --dtype fp16 --pin-cpus \
      ${refit[@]+"${refit[@]}"} --no-progress -o "$out/records-$run.csv" --iterations-out "$out/iterations-$run.csv" \
      > "$out/validate-$run.txt" 2>&1
  rc=$?; echo "rc=$rc" >> "$out/validate-$run.txt"; cat "$out/validate-$run.txt"
  if (( rc == 2 )) && (( ${#refit[@]} )); then     # the re-fit was refused: validate the plan as committed
    echo "== re-fit refused (see above): validating with the plan's own model" | tee -a "$out/steps.txt"
    refit=()
    t=$(cap 110)
    timeout "$t" "${tb[@]}" validate --plan "$plan" --trace "$trace" --device cuda --dtype fp16 --pin-cpus \
        --no-progress -o "$out/records-$run.csv" --iterations-out "$out/iterations-$run.csv" \
        > "$out/validate-$run.txt" 2>&1
    echo "rc=$?" >> "$out/validate-$run.txt"; cat "$out/validate-$run.txt"
  fi
done

t=$(cap 30); step "summary" "$t"
[ -s "$out/decode-gather.csv" ] && [ -s "$out/h100-opt-1.3b-fp16.csv" ] && timeout "$t" "$py" tests/gpu/summarize_decode.py "$out/decode-gather.csv" "$out/h100-opt-1.3b-fp16.csv" \
    > "$out/decode-before-after.txt" 2>&1
cat "$out/decode-before-after.txt"
echo "done in ${SECONDS}s" | tee -a "$out/steps.txt"
