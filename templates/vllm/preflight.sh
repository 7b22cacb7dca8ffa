#!/bin/sh
# Run by gpuctl on the host (never installed there) before a vLLM engine's files are replaced.
# Usage: preflight IMAGE PROJECT UTILIZATION DRIVER_CUDA GPUS RAM_MIB [FLAG...]
#   IMAGE        the engine's pinned image, already pulled: asked which flags it accepts
#   PROJECT      the engine's Compose project (its container): its own processes' GPU memory is free
#                once it is replaced, so it does not count
#   UTILIZATION  gpu_memory_utilization as the inventory writes it (for the message)
#   DRIVER_CUDA  the highest CUDA the loaded driver's branch supports (gpuctl's table), used when
#                nvidia-smi's banner names none; '' when unknown
#   GPUS         '' when the engine uses no GPU (no CUDA or memory check); else one word per GPU of
#                the engine, INDEX:UUID:TOTAL_MIB:NEEDED_MIB as gpuctl read them from nvidia-smi and
#                computed what vLLM needs there (gpuctl.capacity.vllm_budget), or INDEX alone when
#                nvidia-smi does not list that GPU
#   RAM_MIB      '' for a GPU engine; for a CPU engine (device="cpu") the MiB of host RAM it needs
#                (gpuctl.capacity.cpu_ram_needed_bytes: weights + KV space + runtime), checked against
#                MemAvailable plus what the engine's own container holds now (freed when it is replaced)
#   FLAG...      the options the engine's command line uses (--max-model-len, ...)
# Every problem is collected: exit 1 with all of them on stderr, else 0.
set -u
image=$1 project=$2 utilization=$3 driver_cuda=$4 gpus=$5 ram_mib=$6
shift 6
flags=$#
fail=''
note() {
    fail="$fail
  $1"
}

# vLLM >= 0.9 lists every option only with --help=all; older images with --help.
help=$(docker run --rm --network none "$image" --help=all 2>&1) ||
    help=$(docker run --rm --network none "$image" --help 2>&1)
for flag in "$@"; do
    # The flag as a whole word of the help text, not the start of a longer option.
    pattern=$(printf '%s' "$flag" | sed 's/[.[\\()*+?{}|^$]/\\&/g')
    printf '%s\n' "$help" | grep -qE -- "(^|[^a-z0-9-])$pattern([^a-z0-9-]|\$)" ||
        note "$image does not accept $flag (renamed or removed in this version?)"
done

check_cuda() {
    need=$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" |
        sed -n 's/^NVIDIA_REQUIRE_CUDA=cuda>=\([0-9.]*\).*/\1/p')
    # nvidia-smi's banner: "CUDA Version: 13.0" up to R595, "CUDA UMD Version: 13.3" from R610.
    have=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA \(UMD \)\{0,1\}Version: *\([0-9][0-9.]*\).*/\2/p' | head -n 1)
    [ -n "$have" ] || have=$driver_cuda
    if [ -n "$need" ] && [ -z "$have" ]; then
        note "nvidia-smi does not answer: no driver to run CUDA $need"
    elif [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
        note "the driver supports CUDA $have but the image needs CUDA >= $need: install a newer driver branch or pin an older image"
    fi
}

# One GPU: INDEX[:UUID:TOTAL_MIB:NEEDED_MIB]. Others' memory is what the compute apps outside the
# engine's own container hold on it.
check_memory() {
    # shellcheck disable=SC2046 # the word's fields, split at the colons (no blanks or globs in them)
    set -- $(printf '%s' "$1" | tr ':' ' ')
    if [ $# -lt 4 ]; then
        note "GPU $1 is not visible to nvidia-smi"
        return
    fi
    others=$(printf '%s\n' "$apps" | awk -F', *' -v u="$2" -v ours=" $ours " '
        $4 == u && index(ours, " " $1 " ") == 0 {used += $3; who = who sprintf(" %s (pid %s, %s MiB)", $2, $1, $3)}
        END {printf "%d%s", used, who}')
    used=${others%% *} who=${others#* }
    [ "$who" != "$others" ] || who=''
    if [ $(($3 - used)) -lt "$4" ]; then
        note "GPU $1: gpu_memory_utilization $utilization needs $4 of $3 MiB, but $used MiB are held by: $who"
    fi
}

if [ -n "$gpus" ]; then
    check_cuda
    ours=$(docker top "$project" -eo pid 2>/dev/null | tail -n +2 | tr '\n' ' ')
    apps=$(nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv,noheader,nounits 2>/dev/null)
    for gpu in $gpus; do
        check_memory "$gpu"
    done
fi

# A CPU engine's weights and KV cache live in host RAM.
check_ram() {
    available=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    held=$(docker top "$project" -eo pid,rss 2>/dev/null | tail -n +2 | awk '{kib += $2} END {print int(kib / 1024)}')
    held=${held:-0}
    if [ $((available + held)) -lt "$1" ]; then
        note "the CPU engine needs about $1 MiB of RAM (weights, cpu_kv_cache_gib, runtime) but $available MiB are available (and $held MiB held by the engine now): lower cpu_kv_cache_gib or free memory"
    fi
}

if [ -n "$ram_mib" ]; then
    check_ram "$ram_mib"
fi

if [ -n "$fail" ]; then
    printf 'preflight failed:%s\n' "$fail" >&2
    exit 1
fi
echo "preflight ok: $flags flags accepted"
