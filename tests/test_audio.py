"""Decoding every upload format to 16 kHz mono float32, and refusing what is not audio."""

from __future__ import annotations

import pytest
from audio_fixtures import ONE_SPEAKER, encode_as

from shared.media.decode import AudioDecodeError, decode

DURATION = 21.98


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "ogg", "m4a", "webm"])
def test_every_format_decodes_to_16k_mono(tmp_path, fmt):
    path = encode_as(ONE_SPEAKER, fmt, tmp_path / f"clip.{fmt}", channels=2)
    audio = decode(path)
    assert audio.samples.dtype.name == "float32" and audio.samples.ndim == 1
    assert audio.duration == pytest.approx(DURATION, abs=0.1)  # codec padding stays under 0.1 s
    assert audio.source_channels == 2
    assert 0.01 < float(abs(audio.samples).max()) <= 1.0


def test_bytes_and_paths_decode_alike():
    assert len(decode(ONE_SPEAKER.read_bytes()).samples) == len(decode(ONE_SPEAKER).samples)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is text, not audio\n" * 50, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 20],
    ids=["empty", "text", "truncated-wav-header"],
)
def test_non_audio_is_refused(data):
    with pytest.raises(AudioDecodeError):
        decode(data)


def test_a_file_with_only_video_or_nothing_decodable_is_refused(tmp_path):
    garbled = bytearray(ONE_SPEAKER.read_bytes())
    garbled[:64] = b"\xff" * 64  # destroy the FLAC header
    with pytest.raises(AudioDecodeError):
        decode(bytes(garbled))
