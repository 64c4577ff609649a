#!/usr/bin/env bash
# Compare every protocol on the built-in dataset: 2 clients, 10 rounds, 3 seeds.
# Writes bench/compare/results.md (and .csv, curves.png, confusion_<protocol>.png, runs/).
set -euo pipefail
splitfed=${SPLITFED:-.venv/bin/splitfed}
$splitfed bench --clients 2 --epochs 10 --seeds 0 1 2 --out bench/compare "$@"
