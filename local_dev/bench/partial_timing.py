"""How often a stream's partials came: shared by the native and the Realtime halves of bench-stream."""

from __future__ import annotations


def intervals(arrivals: list[tuple[float, object]]) -> list[float]:
    """Wall seconds between successive partial events of the same utterance: (arrival, utterance) pairs."""
    by: dict[object, list[float]] = {}
    for at, utterance in arrivals:
        by.setdefault(utterance, []).append(at)
    gaps = []
    for times in by.values():
        times.sort()
        gaps += [b - a for a, b in zip(times, times[1:])]
    return gaps
