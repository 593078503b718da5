#!/usr/bin/env bash
# On a GPU machine: the open kernel-lab questions. Logs (and ptxas reports) under $OUT; a part that fails does not
# stop the others. Each candidate that may fault (a new wgmma kernel, a wrong descriptor reading) runs in its own
# process beside the mainline it must beat, so every ratio comes from one process on one card.
#   Usage: scripts/gpu_lab_session.sh [GROUP …]   GROUP: comma-separated parts, run one after another
#   One group (the default: every part) runs on the visible GPU; several groups run at once, group i on GPU i.
# Parts (new candidates add theirs, each beside the mainline it must beat):
#   probes     the wgmma probes (descriptor readings, A from registers, the 128-byte swizzled layouts)
#   forward    the forward mainlines (wgmma on Hopper, mma.sync) at S = 16k
#   backward   the backward mainlines (wgmma on Hopper, mma.sync)
#   profile-backward  Nsight Compute on the wgmma backwards, D = 64 and 128 (stall reasons, pipes, memory)
# With PROFILE=1, Nsight Compute on the D = 128 forward kernels (stall reasons) after the parts.
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
        forward) lab forward 240 forward --quick ;;
        backward) lab backward 300 backward ;;
        profile-backward) OUT=$out timeout 300 lab/profile.sh backward --only="wgmma" >"$out/profile-backward.log" 2>&1
                          echo "profile-backward: exit $?" ;;
        *) echo "unknown part: $1" ;;
    esac
}
group() {  # group PARTS (comma-separated): each in turn, harness builds in a folder of the group's own
    export TMPDIR=$(mktemp -d)
    for name in ${1//,/ }; do part "$name"; done
    cp "$TMPDIR"/distflash-lab/*-ptxas.txt "$out/" 2>/dev/null
}
[ $# -gt 0 ] || set -- probes,forward,backward
if [ $# = 1 ]; then
    group "$1"
else
    index=0
    for parts in "$@"; do CUDA_VISIBLE_DEVICES=$index group "$parts" & index=$((index + 1)); done
    wait
fi
if [ "${PROFILE:-0}" = 1 ]; then OUT=$out timeout 300 lab/profile.sh forward >"$out/profile.log" 2>&1; echo "profile: exit $?"; fi
grep -h "C75" "$out"/*-ptxas.txt 2>/dev/null  # ptxas serialising wgmma or ignoring setmaxnreg
grep -h "correctness\|FAIL" "$out"/*.log
grep -h ",causal,\|,full," "$out"/*-lab.txt
