#!/usr/bin/env bash
# The 3-seed re-measure of issue #34 (docs/results.md): one step per call, resumable (a finished step leaves
# ok-STEP-sSEED in WORKDIR and is skipped). Each step runs on one thread, so two lanes can run side by side on
# 2 cores:
#   for s in "demo 0" "demo 7" "rest 0" "visual 0"; do scripts/remeasure.sh W $s; done &
#   for s in "demo 1" "rest 1" "visual 1" "attacks 0"; do scripts/remeasure.sh W $s; done &
# Steps, for bench seed S (the tiny preset):
#   demo     smfa demo at 200 questions a set: the bench, the vanilla and the forget-10 oracle (shipped for seed 0,
#            else trained with the shipped recipe and cached), SMFA (default), SMFA paper, IDK, vanilla, oracle
#   rest     the other methods of smfa compare at forget 10, same vanilla and oracle
#   visual   the visual-only setting (--target visual): SMFA, SMFA paper, IDK, MMUnlearner
#   attacks  smfa eval --attacks all (60 questions a set) of SMFA, SMFA paper, IDK, the vanilla and the oracle
set -u
W=$1; kind=$2; S=$3
mkdir -p "$W" && cd "$W" || exit 2
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 SMFA_CACHE_DIR=${SMFA_CACHE_DIR:-$W/cache}
[ -f "ok-$kind-s$S" ] && { echo "$kind s$S: done before"; exit 0; }
V=$(sed -n 's/.* vanilla: \(\/.*\)$/\1/p' "s$S.log" 2>/dev/null | head -1)
O=$(sed -n 's/.* oracle (never saw forget 10): \(\/[^ ]*\).*/\1/p' "s$S.log" 2>/dev/null | head -1)
if [ "$kind" != demo ] && { [ -z "$V" ] || [ -z "$O" ]; }; then
  echo "$kind s$S: run 'demo $S' first (no vanilla/oracle in $W/s$S.log)" >&2; exit 2
fi
start=$(date +%s)
case $kind in
  demo)   smfa demo --seed "$S" --eval-limit 200 --out "s$S" > "s$S.log" 2>&1 ;;
  rest)   smfa compare --bench "s$S/bench" --model "$V" --oracle "10=$O" --forget 10 --seed "$S" --eval-limit 200 \
            --methods ga_diff,kl_min,npo,mmunlearner,ties,ga --out "s$S-rest" > "s$S-rest.log" 2>&1 ;;
  visual) smfa compare --bench "s$S/bench" --model "$V" --oracle "10=$O" --forget 10 --seed "$S" --eval-limit 200 \
            --target visual --methods smfa,smfa@none,idk,mmunlearner --out "s$S-visual" > "s$S-visual.log" 2>&1 ;;
  attacks) rc=0
          for pair in smfa:"s$S/cells/smfa-f10" smfa@none:"s$S/cells/smfa@none-f10" idk:"s$S/cells/idk-f10" vanilla:"$V" oracle:"$O"; do
            name=${pair%%:*}; model=${pair#*:}
            [ -f "att-s$S/$name/metrics.json" ] && continue
            smfa eval --bench "s$S/bench" --model "$model" --forget 10 --limit 60 --attacks all --out "att-s$S/$name" \
              --overwrite >> "att-s$S.log" 2>&1 || rc=1
          done
          (exit $rc) ;;
  *) echo "unknown step $kind (demo, rest, visual, attacks)" >&2; exit 2 ;;
esac
rc=$?
echo "$(date +%H:%M) $kind s$S rc=$rc $(( $(date +%s) - start )) s" >> done.txt
[ $rc = 0 ] && touch "ok-$kind-s$S"
exit $rc
