"""What each Modal function costs per hour of audio, from a measured speed (real-time factor).

    cost = billed seconds x (GPU price + CPU cores x core price + GiB x memory price)
    billed seconds per audio hour = RTF x 3600                      (warm containers, steady traffic)
                                  + containers x (cold start + scaledown_window)   (one cold request)

Prices: Modal's list prices per second at the time of writing (modal.com/pricing): check them before
relying on the numbers. `modal run -m functions.app::bench --src FILE` measures the RTFs on the
deployed functions (`measure`) and prints this table (`deployment_rows`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from functions.settings import FunctionSpec, ModalSettings
from shared.core.domain import SAMPLE_RATE, TranscribeOptions
from shared.media.pcm import ChunkAudio
from shared.pipeline.stages import Stage

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


def measure(calls, samples: np.ndarray, *, batch_size: int, options: TranscribeOptions) -> dict[str, float]:
    """Real-time factor of each function on `samples`: warm calls, one after another, so each time is
    one container's busy time (what Modal bills), not the fan-out's wall time."""
    duration = len(samples) / SAMPLE_RATE
    probe = samples[: 10 * SAMPLE_RATE]
    calls.call(Stage.VAD_SPLIT.value, probe)  # warm: the enter hooks run on the first call
    t = time.perf_counter()
    chunks = calls.call(Stage.VAD_SPLIT.value, samples)
    vad_s = time.perf_counter() - t
    audio = [ChunkAudio(c, samples) for c in chunks]  # each takes only its own spans across the wire
    batches = [audio[i : i + batch_size] for i in range(0, len(audio), batch_size)]
    calls.call(Stage.TRANSCRIBE.value, batches[0][:1], options)
    t = time.perf_counter()
    for batch in batches:
        calls.call(Stage.TRANSCRIBE.value, batch, options)
    transcribe_s = time.perf_counter() - t
    calls.call(Stage.DIARIZE.value, probe, options.speakers)
    t = time.perf_counter()
    calls.call(Stage.DIARIZE.value, samples, options.speakers)
    diarize_s = time.perf_counter() - t
    return {
        "audio_s": duration,
        "chunks": len(chunks),
        "batches": len(batches),
        "vad": vad_s / duration,
        "transcriber": transcribe_s / duration,
        "diarizer": diarize_s / duration,
    }


def deployment_rows(rtf: dict[str, float], settings: ModalSettings) -> list[Cost]:
    """The cost of each stage function from measured RTFs; the transcriber's batches of an audio hour
    spread over up to max_containers containers."""
    batches_per_hour = math.ceil(rtf["batches"] * 3600 / rtf["audio_s"])
    return [
        per_audio_hour("Vad (CPU)", settings.vad, rtf["vad"]),
        per_audio_hour(
            f"Transcriber ({settings.transcriber.gpu})",
            settings.transcriber,
            rtf["transcriber"],
            containers=min(batches_per_hour, settings.transcriber.max_containers),
        ),
        per_audio_hour(f"Diarizer ({settings.diarizer.gpu})", settings.diarizer, rtf["diarizer"]),
    ]
