"""OpenAI's known speakers (known_speaker_names[] + known_speaker_references[] as data URLs), sent by the
official `openai` SDK to the real server: transcripts name the speakers after the references."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import openai
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, reference_turns
from jobs_support import API_KEY, keyed_client, keyed_server, short_clip

SR = 16000


@pytest.fixture(scope="module")
def server():
    return keyed_server()


@pytest.fixture(scope="module")
def sdk(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=180) as client:
        yield client


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return short_clip(tmp_path_factory.mktemp("speakers") / "four_seconds.wav", seconds=4.0)


def wav_data_url(samples: np.ndarray) -> str:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(out.getvalue()).decode()


def cut(path, start: float, end: float) -> np.ndarray:
    return load_audio(path)[int(start * SR) : int(end * SR)]


@pytest.fixture(scope="module")
def reader():
    return wav_data_url(cut(ONE_SPEAKER, 12.7, 18.38))  # an utterance of hers that two_speakers.flac lacks


@pytest.fixture(scope="module")
def jfk():
    return wav_data_url(cut(TWO_SPEAKERS, 7.8, 11.95))  # his first turn


def transcribe(sdk, path, names, references, **kwargs):
    with open(path, "rb") as f:
        return sdk.audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize", file=f, known_speaker_names=names,
            known_speaker_references=references, **kwargs,
        )  # fmt: skip


def expected(names: dict[str, str]) -> list[tuple[str, float, float]]:
    return [(names[speaker], start, end) for speaker, start, end in reference_turns(TWO_SPEAKERS)]


def assert_turns(segments, turns) -> None:
    assert [s.speaker for s in segments] == [name for name, _, _ in turns]
    for segment, (_, start, end) in zip(segments, turns):
        assert segment.start == pytest.approx(start, abs=0.6) and segment.end == pytest.approx(end, abs=0.6)


@pytest.mark.slow
def test_both_references_name_every_turn(sdk, reader, jfk):
    result = transcribe(sdk, TWO_SPEAKERS, ["Reader", "JFK"], [reader, jfk], response_format="diarized_json")
    assert isinstance(result, openai.types.audio.TranscriptionDiarized)
    assert_turns(result.segments, expected({"librivox_reader": "Reader", "jfk": "JFK"}))
    assert "fellow Americans" in result.segments[1].text


@pytest.mark.slow
def test_one_reference_leaves_the_other_speaker_a_letter(sdk, jfk):
    result = transcribe(sdk, TWO_SPEAKERS, ["JFK"], [jfk], response_format="diarized_json")
    assert_turns(result.segments, expected({"librivox_reader": "A", "jfk": "JFK"}))


@pytest.mark.slow
def test_plain_field_names_and_verbose_json(server, reader):
    """Without the brackets too; verbose_json and srt carry the name like any diarized speaker label."""
    with keyed_client(server) as client, open(TWO_SPEAKERS, "rb") as f:
        response = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("two.flac", f)},
            data={"model": "whisper-1", "response_format": "verbose_json",
                  "known_speaker_names": "Reader", "known_speaker_references": reader},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    speakers = [s["speaker"] for s in body["segments"]]
    assert speakers[0::2] == ["Reader"] * 3
    assert len(set(speakers[1::2])) == 1 and speakers[1].startswith("SPEAKER_")
    assert sorted(body["speakers"]) == sorted(["Reader", speakers[1]])


def refused(sdk, clip, names, references, status=422) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        transcribe(sdk, clip, names, references, response_format="diarized_json")
    assert info.value.status_code == status, info.value.body
    return info.value


def test_bad_references_are_refused_clearly(sdk, server, clip, reader, jfk):
    error = refused(sdk, clip, ["Reader"], ["https://example.com/reader.wav"])
    assert error.code == "invalid_voice_sample" and error.body["param"] == "known_speaker_references"
    assert "known_speaker_references[0] is not a base64 data URL" in error.message

    error = refused(sdk, clip, ["Reader", "JFK"], [reader, "data:audio/wav;base64,%%%not-base64%%%"])
    assert error.code == "invalid_voice_sample" and "known_speaker_references[1]" in error.message
    assert "%%%" not in error.message

    error = refused(sdk, clip, ["Reader"], ["data:text/plain;base64," + base64.b64encode(b"hello").decode()])
    assert "text/plain, not of audio" in error.message

    error = refused(sdk, clip, ["Reader"], ["data:audio/wav;base64," + base64.b64encode(b"\x01" * 5000).decode()])
    assert error.code == "invalid_voice_sample" and "not audio that can be decoded" in error.message

    error = refused(sdk, clip, ["Reader"], [wav_data_url(cut(ONE_SPEAKER, 0.3, 12.35))])
    assert error.code == "invalid_voice_sample" and "must be 2-10 s" in error.message

    error = refused(sdk, clip, ["Reader"], [wav_data_url(cut(ONE_SPEAKER, 0.3, 1.3))])
    assert error.code == "too_little_speech" and "runs 1.0 s" in error.message

    error = refused(sdk, clip, ["SPEAKER_01"], [reader])
    assert error.code == "invalid_voice_name" and "known_speaker_names[0]" in error.message

    error = refused(sdk, clip, ["Reader", "reader"], [reader, jfk])
    assert error.code == "invalid_voice_sample" and "every name must be different" in error.message

    assert not list(server.storage.rglob("*.part"))  # nothing staged stays behind


def test_counts_are_checked(sdk, clip, reader, jfk):
    error = refused(sdk, clip, ["Reader", "JFK"], [reader])
    assert error.code == "invalid_parameter"
    assert "2 known_speaker_names[] but 1 known_speaker_references[]" in error.message
    error = refused(sdk, clip, ["JFK"], [])  # names alone: the SDK sends no reference field at all
    assert error.code == "invalid_parameter"
    error = refused(sdk, clip, [f"Voice {i}" for i in range(5)], [reader, jfk, reader, jfk, reader])
    assert error.code == "invalid_parameter" and "at most 4 known speakers" in error.message


def test_translations_and_query_parameters_refuse_them(server, clip, reader):
    with keyed_client(server) as client:
        for route, params, data in (
            ("/v1/audio/translations", {}, {"known_speaker_names[]": "Reader", "known_speaker_references[]": reader}),
            ("/v1/audio/transcriptions", {"known_speaker_names[]": "Reader"}, {}),
        ):
            with open(clip, "rb") as f:
                response = client.post(route, params=params, files={"file": ("c.wav", f)}, data={"model": "m", **data})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["param"] == "known_speaker_names[]"

