#!/usr/bin/env bash
# Reproduce the figures of docs/archive/results.md and docs/archive/robustness-attacks.md on the tiny bench (2 CPU cores: ~1.2 h).
# Usage: scripts/reproduce_results.sh [WORKDIR]   (default /tmp/smfa-results)
set -euo pipefail
W=${1:-/tmp/smfa-results}
mkdir -p "$W"
export TQDM_DISABLE=1
[ -f "$W/bench/bench.json" ] || smfa bench build --preset tiny --seed 0 --out "$W/bench" --quiet
[ -f "$W/vanilla/manifest.json" ] || smfa finetune --bench "$W/bench" --out "$W/vanilla"
[ -f "$W/oracle/manifest.json" ] || smfa finetune --bench "$W/bench" --out "$W/oracle" --people retain --forget 10
# 1. every method's hyper-parameters on the validation forget split (never the test sets): docs/archive/tuning.md
python "$(dirname "$0")/tune_on_validation.py" --bench "$W/bench" --model "$W/vanilla" --out "$W/tuning"
# 2. every method at forget 10 % with the oracle (resumable; add 5,15 for the other ratios)
smfa compare --bench "$W/bench" --model "$W/vanilla" --oracle "10=$W/oracle" --forget 10 --out "$W/compare-all" --eval-limit 100
# 3. SMFA ablation (mask modes) at forget 10, re-sculpted from the compare run's adapters
for mode in none conflict magnitude both; do
  [ -f "$W/compare-all/cells/smfa-f10/sweep-$mode/sweep.json" ] || smfa sculpt "$W/compare-all/cells/smfa-f10" --mode "$mode" --k "$(python -c 'import yaml,importlib.resources as r;print(yaml.safe_load((r.files("smfa")/"configs/methods/smfa.yaml").read_text())["k"])')" --limit 100
done
# 4. the visual-only setting
smfa compare --bench "$W/bench" --model "$W/vanilla" --forget 10 --target visual --methods smfa,mmunlearner,ga_diff,idk --out "$W/compare-visual" --eval-limit 100
# 5. attacks on every forget-10 model, the vanilla and the oracle
for cell in "$W"/compare-all/cells/*-f10; do
  name=$(basename "$cell")
  case "$name" in vanilla-*|oracle-*) continue;; esac
  [ -f "$W/attacks/$name/metrics.json" ] || smfa eval --bench "$W/bench" --model "$cell" --forget 10 --limit 60 --attacks all --out "$W/attacks/$name" --overwrite
done
for ref in vanilla oracle; do
  [ -f "$W/attacks/$ref/metrics.json" ] || smfa eval --bench "$W/bench" --model "$W/$ref" --forget 10 --limit 60 --attacks all --out "$W/attacks/$ref" --overwrite
done
echo "done: $W"
