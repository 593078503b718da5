#!/usr/bin/env bash
# On a GPU machine: the open kernel-lab questions in one pass. Logs (and ptxas reports) under $OUT; a harness
# that fails does not stop the others. Candidates that may fault (a wrong descriptor reading) run in their own
# process, after the ones that cannot.
#   0. the wgmma probes (4 and 5: the 128-byte swizzled layouts, not yet run)
#   1. forward: the mainline and the mma.sync candidate (v8, fewer live registers), then the wgmma candidates
#      apart (v6; v7, v6 with the softmax overlapped; v9, v7 on 128-byte swizzled tiles, in both readings of
#      the transposed descriptor)
#   2. backward: the mainline (wgmma on Hopper) beside the mma.sync backward of earlier cards, then the wgmma
#      candidates apart (v7: the element-wise work overlapped with the products; v8: v7 with dQ by bulk
#      reductions; v9: v7 on 128-byte swizzled tiles, D = 128, both readings of the transposed descriptor)
#   3. with PROFILE=1, Nsight Compute on the D = 128 forward candidates (stall reasons)
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | tee "$out/gpu.txt"
lab() {  # lab LOG_NAME SECONDS HARNESS ARGUMENTS…
    local log=$1 seconds=$2
    shift 2
    OUT=$out LAB_TAG=$log timeout "$seconds" lab/run.sh "$@" >"$out/$log.log" 2>&1
    echo "$log: exit $?"
}
lab wgmma 120 wgmma
lab forward 200 forward --quick --skip=wgmma
lab forward-v6 120 forward --quick --only=v6
lab forward-v7 120 forward --quick --only=v7
lab forward-v9 120 forward --quick --only=v9 --skip=alt
lab forward-v9-alt 120 forward --quick --only="swizzled alt"
lab backward 300 backward --skip=" v"
lab backward-v7 200 backward --only=v7
lab backward-v8 200 backward --only=v8
lab backward-v9 200 backward --only=v9 --skip=alt
lab backward-v9-alt 200 backward --only="swizzled alt"
if [ "${PROFILE:-0}" = 1 ]; then OUT=$out timeout 300 lab/profile.sh forward >"$out/profile.log" 2>&1; echo "profile: exit $?"; fi
cp "${TMPDIR:-/tmp}"/distflash-lab/*-ptxas.txt "$out/" 2>/dev/null
grep -h "correctness\|FAIL" "$out"/*.log
grep -h ",causal,\|,full," "$out"/*-lab.txt
