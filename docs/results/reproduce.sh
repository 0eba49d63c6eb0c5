#!/usr/bin/env bash
# Rerun every study behind docs/reproduction.md, in the order the page uses.
#
# Usage: BLOCKSEARCH_DATA=PATH docs/results/reproduce.sh [STEP...]
#   PATH is the CIFAR-10 folder (train/ and test/ class folders, or
#   torchvision's cifar-10-batches-py). STEP is any of paper20 relu seeds
#   paper-other search retrain export; with none, all run in that order.
#   export writes the JSON files of docs/results/ from the studies, and
#   docs/results/compare.py turns those into the tables of the page.
#   RUN_OPTIONS, if set, is added to every blocksearch run; for example
#   RUN_OPTIONS='--threads 1' lets two copies of this script, given
#   different steps, share two cores.
#
# Each step is an ordinary `blocksearch run`, so stopping the script and
# starting it again resumes every study where it stopped. Studies land in
# studies/repro-*.journal; the exports of docs/results/ come from them.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BLOCKSEARCH_DATA:?set BLOCKSEARCH_DATA to the CIFAR-10 folder}"
export BLOCKSEARCH_DATA

step() {
    local name=$1
    shift
    echo "$(date -u +%FT%TZ) start $name: blocksearch run $*"
    # shellcheck disable=SC2086  # RUN_OPTIONS is a list of words
    blocksearch run "$@" --artifact-dir "studies/repro-$name-artifacts" \
        ${RUN_OPTIONS:-}
    echo "$(date -u +%FT%TZ) end $name"
}

paper20() {  # the published protocol at 20 blocks: presets, seed 42, 50 epochs
    step paper spaces/tanh_placements.py --protocol paper --depths 20 \
        --trials 3 --epochs 50 --storage studies/repro-paper.journal
}
relu() {  # the ReLU control at 20 blocks, 20 epochs
    step relu spaces/relu_placements.py --protocol paper --depths 20 \
        --trials 3 --epochs 20 --storage studies/repro-relu.journal
}
seeds() {  # seed noise: each preset with seeds 42, 43 and 44, 20 epochs
    step seeds spaces/tanh_placements.py --protocol paper --depths 20 \
        --trials 3 --epochs 20 --repeats 3 --storage studies/repro-seeds.journal
}
paper-other() {  # the published protocol at 15, 25 and 50 blocks
    step paper spaces/tanh_placements.py --protocol paper --depths 15,25,50 \
        --trials 3 --epochs 50 --storage studies/repro-paper.journal
}
search() {  # a real search: validation protocol, pruning, 30 trials
    step search spaces/tanh_placements.py --depths 20 --trials 30 --epochs 20 \
        --storage studies/repro-search.journal
}

retrain() {  # the search's best design beside control, 3 seeds, on the test split
    blocksearch export spaces/tanh_placements.py --depths 20 \
        --storage studies/repro-search.journal --out studies/repro-search-best
    step retrain spaces/tanh_placements.py --protocol paper --depths 20 \
        --trials 2 --epochs 20 --repeats 3 --presets control \
        --storage studies/repro-retrain.journal \
        --designs studies/repro-search-best/tanh_placements-depth20/design.txt
}

export() {  # one JSON export per storage, from blocksearch show
    local name space
    for name in paper relu seeds search retrain; do
        space=spaces/tanh_placements.py
        [ "$name" = relu ] && space=spaces/relu_placements.py
        [ -f "studies/repro-$name.journal" ] || continue
        blocksearch show "$space" --storage "studies/repro-$name.journal" \
            --format json --top 40 > "docs/results/$name.json"
        blocksearch plot "$space" --storage "studies/repro-$name.journal" \
            --out "docs/results/plots-$name"
    done
}

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
    steps=(paper20 relu seeds paper-other search retrain export)
fi
for name in "${steps[@]}"; do
    "$name"
done
