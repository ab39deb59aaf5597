#!/usr/bin/env bash
# The GPU checks of a session lent a GPU machine, in one call (its device time is short: 15 minutes,
# the machine's start included). Run there from the repository root, after benchmarks/gpu_wheels.sh
# here, with .whl carried:
#
#     run(command="bash benchmarks/gpu_checks.sh", carry=[".whl"], timeout_s=600)
#
# It installs the wheels beside the image's packages (nothing is fetched there), then runs, each under
# its own time limit so that one that overruns leaves the others their turn, on a random-init model of
# Qwen2.5-0.5B's layout in bf16, most wanted first: a harness trial vs bare TRL with full fine-tuning
# (tokens/s, the share of a trial outside training), the reference cache vs none (2 trials a side), the
# same trial with LoRA, then the default toy sweep through `--devices all` (trial processes pinned to the
# GPU). About 9 minutes in all. Each check's output goes to $OUT/<check>.log (what comes back); the last
# lines of each are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
started=$SECONDS

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed: run benchmarks/gpu_wheels.sh here first"; exit 1; }
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in
        ('torch', 'transformers', 'trl', 'peft', 'accelerate', 'datasets', 'optuna', 'mlflow-skinny', 'lm-eval',
         'huggingface-hub', 'pyarrow', 'fsspec', 'numpy', 'pandas')))"  # datasets wants pyarrow>=24, fsspec<=2026.9
    python3 -c "import harness.cli, trl, optuna, mlflow, lm_eval, plotly; print('imports: ok')"
} 2>&1 | tee "$OUT/env.log"

check() {  # check NAME SECONDS COMMAND...: one benchmark, its output kept, cut at SECONDS
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s; ${SECONDS}s into the checks)"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "   exit $? after $((SECONDS - started)) s"
}
check trl-full 150 python3 benchmarks/trl_overhead.py --model qwen2.5-0.5b --rounds 1
check ref-cache 200 python3 benchmarks/ref_cache.py --model qwen2.5-0.5b --trials 2
check trl-lora 100 python3 benchmarks/trl_overhead.py --model qwen2.5-0.5b --rounds 1 --lora
check devices 80 python3 -m harness.cli sweep sweeps/beta.yaml --devices all --trials 2 \
    --storage sqlite:////tmp/devices/optuna.db --tracking-uri sqlite:////tmp/devices/mlflow.db \
    --output-dir /tmp/devices/out --report-dir /tmp/devices/report

for log in "$OUT"/*.log; do
    echo "---- $(basename "$log")"
    grep -v -E 'Warning|warn\(|^\s*$' "$log" | tail -n 14
done
