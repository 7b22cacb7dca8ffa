"""Preflight for a vLLM engine, run on the host before its running engine is replaced.

It asks the pinned image itself which flags it accepts (so a renamed flag fails in seconds, not after
a cold start), compares the CUDA version the image requires with what the driver supports, and checks
that the engine's GPUs have the memory its gpu_memory_utilization needs once the engine's own
container is stopped (another process holding VRAM is named). Any failure stops the host before a
file is replaced, so the previous engine keeps running.
"""

from __future__ import annotations

import re
import shlex

from gpuctl import outside
from gpuctl.host_layout import DRIVER_VERSION_FILE
from gpuctl.spec import HostSpec, VllmSpec


def flags_of(engine: VllmSpec) -> list[str]:
    return sorted({arg.split("=", 1)[0] for arg in engine.command_args() if arg.startswith("--")})


def preflight_script(host: HostSpec, engine: VllmSpec) -> str:
    image = shlex.quote(engine.image)
    lines = [
        "fail=''",
        'note() { fail="$fail\n  $1"; }',
        # vLLM >= 0.9 lists every option only with --help=all; older images with --help.
        f"help=$(docker run --rm --network none {image} --help=all 2>&1) || help=$(docker run --rm --network none {image} --help 2>&1)",
    ]
    for flag in flags_of(engine):
        pattern = f"(^|[^a-z0-9-]){re.escape(flag)}([^a-z0-9-]|$)"
        lines.append(
            f"printf '%s\\n' \"$help\" | grep -qE -- {shlex.quote(pattern)} || "
            f"note {shlex.quote(f'{engine.image} does not accept {flag} (renamed or removed in this version?)')}"
        )
    if host.gpus is not None and engine.gpu_access != "none":
        lines += cuda_lines(image) + memory_lines(engine)
    lines += [
        'if [ -n "$fail" ]; then printf "preflight failed:%s\\n" "$fail" >&2; exit 1; fi',
        f"echo 'preflight ok: {len(flags_of(engine))} flags accepted'",
    ]
    return "\n".join(lines)


def cuda_lines(image: str, version_file: str = str(DRIVER_VERSION_FILE)) -> list[str]:
    """The image's NVIDIA_REQUIRE_CUDA against the highest CUDA the loaded driver supports.

    nvidia-smi's banner says it as 'CUDA Version: 13.0' up to R595 and 'CUDA UMD Version: 13.3' from
    R610; when neither is there, the driver's branch (from VERSION_FILE) gives it through the table
    in gpuctl.outside.DRIVER_MAX_CUDA.
    """
    table = " ".join(f"{branch}:{cuda}" for branch, cuda in outside.DRIVER_MAX_CUDA.items())
    return [
        f"need=$(docker image inspect -f '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' {image} "
        "| sed -n 's/^NVIDIA_REQUIRE_CUDA=cuda>=\\([0-9.]*\\).*/\\1/p')",
        "have=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA \\(UMD \\)\\{0,1\\}Version: *\\([0-9][0-9.]*\\).*/\\2/p' | head -n 1)",
        f"driver=$(sed -n 's/^NVRM version:.*  \\([0-9][0-9]*\\.[0-9.]*\\)  .*/\\1/p' {version_file} 2>/dev/null | head -n 1)",
        'if [ -z "$have" ] && [ -n "$driver" ]; then '
        f'have=$(awk -v b="${{driver%%.*}}" \'BEGIN {{n = split("{table}", t, " "); best = 0; '
        'for (i = 1; i <= n; i++) { split(t[i], kv, ":"); if (kv[1] + 0 <= b + 0 && kv[1] + 0 > best) { best = kv[1] + 0; cuda = kv[2] } } '
        "print cuda }'); fi",
        'if [ -n "$need" ] && [ -z "$have" ]; then note "nvidia-smi does not answer: no driver to run CUDA $need"; '
        'elif [ -n "$need" ] && [ "$(printf "%s\\n%s\\n" "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then '
        'note "the driver supports CUDA $have but the image needs CUDA >= $need: install a newer driver branch or pin an older image"; fi',
    ]


def memory_lines(engine: VllmSpec) -> list[str]:
    """Free memory on each of the engine's GPUs, not counting the engine's own container."""
    gpus = " ".join(str(i) for i in engine.gpu_indices())
    utilization = f"{engine.gpu_memory_utilization:g}"
    return [
        f"ours=$(docker top {engine.project} -eo pid 2>/dev/null | tail -n +2 | tr '\\n' ' ')",
        "apps=$(nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv,noheader,nounits 2>/dev/null)",
        f"for gpu in {gpus}; do",
        "  row=$(nvidia-smi --query-gpu=index,uuid,memory.total,memory.used --format=csv,noheader,nounits "
        "| awk -F', *' -v i=\"$gpu\" '$1 == i')",
        '  [ -n "$row" ] || { note "GPU $gpu is not visible to nvidia-smi"; continue; }',
        "  uuid=$(echo \"$row\" | awk -F', *' '{print $2}'); total=$(echo \"$row\" | awk -F', *' '{print $3}')",
        '  others=$(printf \'%s\\n\' "$apps" | awk -F\', *\' -v u="$uuid" -v ours=" $ours " '
        '\'$4 == u && index(ours, " " $1 " ") == 0 {used += $3; who = who sprintf(" %s (pid %s, %s MiB)", $2, $1, $3)} '
        'END {printf "%d%s", used, who}\')',
        '  used=${others%% *}; who=${others#* }; [ "$who" != "$others" ] || who=\'\'',
        f'  needed=$(awk -v t="$total" \'BEGIN {{printf "%d", t * {utilization}}}\')',
        '  if [ $((total - used)) -lt "$needed" ]; then '
        f'note "GPU $gpu: gpu_memory_utilization {utilization} needs $needed of $total MiB, but $used MiB are held by: $who"; fi',
        "done",
    ]
