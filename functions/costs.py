"""What each Modal function costs per hour of audio, from a measured speed (real-time factor).

    cost = billed seconds x (GPU price + CPU cores x core price + GiB x memory price)
    billed seconds per audio hour = RTF x 3600                      (warm containers, steady traffic)
                                  + containers x (cold start + scaledown_window)   (one cold request)

Prices: Modal's list prices per second at the time of writing (modal.com/pricing): check them before
relying on the numbers. `modal run -m functions.app::bench --src FILE` measures the RTFs on the
deployed functions and prints this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.settings import FunctionSpec

GPU_PER_S = {
    "T4": 0.000164,
    "L4": 0.000222,
    "A10G": 0.000306,
    "L40S": 0.000542,
    "A100-40GB": 0.000583,
    "A100-80GB": 0.000694,
    "H100": 0.001097,
}
CPU_CORE_PER_S = 0.0000131  # a physical core (2 vCPUs)
MEMORY_GIB_PER_S = 0.00000222
DEFAULT_CPU = 0.125  # what Modal reserves when a function asks for no CPU


def per_second(spec: FunctionSpec) -> float:
    gpu = GPU_PER_S[spec.gpu.split(":")[0]] if spec.gpu else 0.0
    cpu = (spec.cpu or DEFAULT_CPU) * CPU_CORE_PER_S
    memory = (spec.memory_mib or 0) / 1024 * MEMORY_GIB_PER_S
    return gpu + cpu + memory


@dataclass(frozen=True)
class Cost:
    function: str
    rtf: float
    busy_s: float  # per audio hour
    warm_usd: float  # per audio hour, containers already up
    cold_usd: float  # one request on a cold deployment: + containers x (start + scaledown window)


def per_audio_hour(
    function: str, spec: FunctionSpec, rtf: float, *, containers: int = 1, cold_start_s: float = 20.0
) -> Cost:
    busy = rtf * 3600.0
    rate = per_second(spec)
    overhead = containers * (cold_start_s + spec.scaledown_window_s)
    return Cost(function, rtf, busy, busy * rate, (busy + overhead) * rate)


def table(costs: list[Cost]) -> str:
    lines = [
        "| function | RTF | busy s / audio h | $ / audio h (warm) | $ / audio h (one cold request) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in costs:
        lines.append(f"| {c.function} | {c.rtf:.4f} | {c.busy_s:.0f} | {c.warm_usd:.4f} | {c.cold_usd:.4f} |")
    total_warm = sum(c.warm_usd for c in costs)
    total_cold = sum(c.cold_usd for c in costs)
    lines.append(f"| **total** | | | **{total_warm:.3f}** | **{total_cold:.3f}** |")
    return "\n".join(lines)
