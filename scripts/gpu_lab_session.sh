#!/usr/bin/env bash
# On a GPU machine: every open kernel-lab question in one pass, cheapest and most informative first. Logs (and
# ptxas reports) under $OUT; a harness that fails does not stop the others.
#   1. the wgmma probes (descriptors, B transposed, A from registers)
#   2. the forward candidates but the wgmma one, then the wgmma one alone (a wrong descriptor may fault)
#   3. the backward candidates
#   4. with PROFILE=1, Nsight Compute on the backward (stall reasons)
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | tee "$out/gpu.txt"
OUT=$out timeout 120 lab/run.sh wgmma >"$out/wgmma.log" 2>&1; echo "wgmma probes: exit $?"
OUT=$out LAB_TAG=mma timeout 300 lab/run.sh forward --quick --skip=v6 >"$out/forward.log" 2>&1; echo "forward: exit $?"
OUT=$out LAB_TAG=wgmma timeout 120 lab/run.sh forward --quick --only=v6 >"$out/forward-v6.log" 2>&1; echo "forward v6: exit $?"
OUT=$out timeout 300 lab/run.sh backward >"$out/backward.log" 2>&1; echo "backward: exit $?"
if [ "${PROFILE:-0}" = 1 ]; then OUT=$out timeout 300 lab/profile.sh backward >"$out/profile.log" 2>&1; echo "profile: exit $?"; fi
cp "${TMPDIR:-/tmp}"/distflash-lab/*-ptxas.txt "$out/" 2>/dev/null
grep -h "correctness\|wgmma probes" "$out"/*.log
grep -h ",causal,\|,full," "$out"/*-lab.txt
