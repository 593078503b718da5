#!/usr/bin/env bash
# On a GPU machine: the open kernel-lab questions. Logs (and ptxas reports) under $OUT; a part that fails does not
# stop the others. Each candidate that may fault (a new wgmma kernel, a wrong descriptor reading) runs in its own
# process beside the mainline it must beat, so every ratio comes from one process on one card.
#   Usage: scripts/gpu_lab_session.sh [GROUP …]   GROUP: comma-separated parts, run one after another
#   One group (the default: every part) runs on the visible GPU; several groups run at once, group i on GPU i.
# Parts:
#   probes             the wgmma probes 4 and 5 (the 128-byte swizzled layouts)
#   forward            the mma.sync mainline beside v8 (fewer live registers)
#   forward-v6|v7|v9   the mainline beside wgmma forward v6; v7 (v6 with the softmax overlapped); v9 (v7 on
#   forward-v9-alt     128-byte swizzled tiles, in each reading of the transposed descriptor)
#   backward           the mainline (wgmma on Hopper) beside the mma.sync backward and v7 (element-wise work
#                      overlapped with the products)
#   backward-v8        the mainline beside v8 (v7 with dQ by bulk reductions)
#   backward-v9|v9-alt the mainline beside v9 (v7 on 128-byte swizzled tiles, D = 128), each reading
# With PROFILE=1, Nsight Compute on the D = 128 forward candidates (stall reasons) after the parts.
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
part() {
    case $1 in
        probes) lab probes 150 wgmma ;;
        forward) lab forward 240 forward --quick --skip=wgmma ;;
        forward-v6) lab forward-v6 180 forward --quick --only="v2 |v6" ;;
        forward-v7) lab forward-v7 180 forward --quick --only="v2 |v7" ;;
        forward-v9) lab forward-v9 180 forward --quick --only="v2 |v9" --skip=alt ;;
        forward-v9-alt) lab forward-v9-alt 180 forward --quick --only="v2 |swizzled alt" ;;
        backward) lab backward 300 backward --skip="v8|v9" ;;
        backward-v8) lab backward-v8 240 backward --only="wgmma|v8" ;;
        backward-v9) lab backward-v9 240 backward --only="wgmma|v9" --skip=alt ;;
        backward-v9-alt) lab backward-v9-alt 240 backward --only="wgmma|swizzled alt" ;;
        *) echo "unknown part: $1" ;;
    esac
}
group() {  # group PARTS (comma-separated): each in turn, harness builds in a folder of the group's own
    export TMPDIR=$(mktemp -d)
    for name in ${1//,/ }; do part "$name"; done
    cp "$TMPDIR"/distflash-lab/*-ptxas.txt "$out/" 2>/dev/null
}
[ $# -gt 0 ] || set -- probes,forward,forward-v6,forward-v7,forward-v9,forward-v9-alt,backward,backward-v8,backward-v9,backward-v9-alt
if [ $# = 1 ]; then
    group "$1"
else
    index=0
    for parts in "$@"; do CUDA_VISIBLE_DEVICES=$index group "$parts" & index=$((index + 1)); done
    wait
fi
if [ "${PROFILE:-0}" = 1 ]; then OUT=$out timeout 300 lab/profile.sh forward >"$out/profile.log" 2>&1; echo "profile: exit $?"; fi
grep -h "correctness\|FAIL" "$out"/*.log
grep -h ",causal,\|,full," "$out"/*-lab.txt
