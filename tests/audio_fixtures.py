"""Test-audio fixtures: paths, references, decoding, and re-encoding into upload formats.

The fixtures are committed under tests/fixtures (built by tests/fixtures/make_fixtures.py from
real public-domain speech; see tests/fixtures/README.md). Tests only read those files.

    from audio_fixtures import TWO_SPEAKERS, load_reference, encode_as
    # (pytest puts tests/ on sys.path for test modules there, as tests/ has no __init__.py;
    #  `from tests.audio_fixtures import ...` works too when run as `python -m pytest` from the root)

    ref = load_reference(TWO_SPEAKERS)      # {"turns": [{speaker, start, end, text}, ...], "text": ...}
    mp3 = encode_as(TWO_SPEAKERS, "mp3", tmp_path / "two.mp3")
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

from local_dev.eval.scoring import normalize_words  # noqa: F401 - re-exported for tests
from shared.media.decode import decode

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
TWO_SPEAKERS = FIXTURES_DIR / "two_speakers.flac"  # LibriVox reader + JFK, 6 alternating turns, ~28 s
ONE_SPEAKER = FIXTURES_DIR / "one_speaker.flac"  # LibriVox reader alone, 4 utterances, ~22 s
SAMPLE_RATE = 16000

# format -> (container format, encoder, file suffix). Opus (ogg, webm) is encoded at 48 kHz, the
# rate every Opus decoder outputs; the other formats keep the source rate unless told otherwise.
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "pcm_s16le", ".wav"),
    "mp3": ("mp3", "libmp3lame", ".mp3"),
    "flac": ("flac", "flac", ".flac"),
    "ogg": ("ogg", "libopus", ".ogg"),
    "m4a": ("ipod", "aac", ".m4a"),
    "webm": ("webm", "libopus", ".webm"),
}
_DEFAULT_RATE = {"ogg": 48000, "webm": 48000}


class EncoderUnavailable(RuntimeError):
    """PyAV's bundled FFmpeg lacks the encoder or muxer a format needs."""


def reference_path(audio: Path) -> Path:
    return Path(audio).with_suffix(".json")


def load_reference(audio: Path = TWO_SPEAKERS) -> dict:
    """The fixture's reference: sample_rate, duration, num_speakers, speakers, turns (each with
    speaker, start, end in seconds, text, and the source clip), and the full text."""
    return json.loads(reference_path(audio).read_text())


def reference_turns(audio: Path = TWO_SPEAKERS) -> list[tuple[str, float, float]]:
    return [(t["speaker"], t["start"], t["end"]) for t in load_reference(audio)["turns"]]


def reference_text(audio: Path = TWO_SPEAKERS) -> str:
    return load_reference(audio)["text"]


def load_audio(path: Path) -> np.ndarray:
    """Decode any audio file to 16 kHz mono float32 (the service's own decoder)."""
    return decode(path).samples


def encoder_available(fmt: str) -> bool:
    container, codec, _ = FORMATS[fmt]
    try:
        av.Codec(codec, "w")
        av.format.ContainerFormat(container, "w")
    except Exception:
        return False
    return True


def available_formats() -> list[str]:
    """The formats encode_as can write with this PyAV build (all six with PyAV 18's wheels)."""
    return [f for f in FORMATS if encoder_available(f)]


def encode_as(
    path_in: Path,
    fmt: str,
    path_out: Path,
    *,
    sample_rate: int | None = None,
    channels: int = 1,
    bitrate: int | None = None,
) -> Path:
    """Re-encode `path_in` into `fmt` (wav, mp3, flac, ogg = Opus in Ogg, m4a = AAC in MP4,
    webm = Opus in WebM) at `path_out`, with PyAV. `channels=2` duplicates the mono signal into a
    stereo file (to exercise down-mixing); `sample_rate` resamples (default: 16 kHz, 48 kHz for
    Opus). Raises EncoderUnavailable (tests can skip on it) when PyAV's FFmpeg lacks the encoder."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(FORMATS)}")
    container_fmt, codec, _ = FORMATS[fmt]
    if not encoder_available(fmt):
        raise EncoderUnavailable(f"PyAV {av.__version__}: no {codec!r} encoder / {container_fmt!r} muxer")
    rate = sample_rate or _DEFAULT_RATE.get(fmt, SAMPLE_RATE)
    layout = "stereo" if channels == 2 else "mono"
    path_out = Path(path_out)
    path_out.parent.mkdir(parents=True, exist_ok=True)

    with av.open(str(path_in)) as src, av.open(str(path_out), "w", format=container_fmt) as dst:
        stream = dst.add_stream(codec, rate=rate, layout=layout)
        if bitrate:
            stream.bit_rate = bitrate
        # the encoder's preferred sample format (s16 for pcm/flac, fltp for mp3/aac/opus...)
        sample_fmt = stream.codec_context.format.name
        resampler = av.AudioResampler(format=sample_fmt, layout=layout, rate=rate)
        pts = 0

        def write(frames):
            nonlocal pts
            for frame in frames:
                frame.pts = pts
                pts += frame.samples
                for packet in stream.encode(frame):
                    dst.mux(packet)

        for frame in src.decode(audio=0):
            frame.pts = None
            write(resampler.resample(frame))
        write(resampler.resample(None))
        for packet in stream.encode(None):
            dst.mux(packet)
    return path_out
