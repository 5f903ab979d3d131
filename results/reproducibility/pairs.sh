#!/usr/bin/env bash
# Five pairs of back-to-back runs of the same sweep, each pair then compared
# (`mnist-bench compare`, exit status kept) and its spread computed (spread.py).
#   bash results/reproducibility/pairs.sh OUT_DIR [PAIRS]
set -u
out=${1:?usage: pairs.sh OUT_DIR [PAIRS]}
pairs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
for i in $(seq 1 "$pairs"); do
  dir="$out/pair-$i"
  mkdir -p "$dir"
  for side in a b; do
    mnist-bench run --dataset synthetic --models nielsen,mlp --backends numpy,numba,numba-fused,torch \
      --train-limit 10000 --results-dir "$dir/$side" 2> "$dir/$side.log" || exit 1
  done
  a=$(ls "$dir"/a/runs/*.jsonl) b=$(ls "$dir"/b/runs/*.jsonl)
  mnist-bench compare "$a" "$b" > "$dir/compare.txt" 2>&1
  echo "exit status $?" >> "$dir/compare.txt"
  python3 "$here/spread.py" "$a" "$b" > "$dir/spread.txt"
  tail -1 "$dir/spread.txt"
done
