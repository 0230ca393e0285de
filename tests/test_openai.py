"""The official `openai` SDK, pointed at the real service with base_url, in every response format."""

from __future__ import annotations

import openai
import pytest
import srt
import webvtt
from audio_fixtures import TWO_SPEAKERS
from jobs_support import API_KEY, keyed_client, keyed_server, short_clip

from shared.pipeline.transcriber import resolve_whisper_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    return keyed_server()


@pytest.fixture(scope="module")
def sdk(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=180) as client:
        yield client


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return short_clip(tmp_path_factory.mktemp("openai") / "first_eight_seconds.wav")  # one speaker, 8 s


def transcribe(sdk, path, **kwargs):
    with open(path, "rb") as f:
        return sdk.audio.transcriptions.create(model="whisper-1", file=f, **kwargs)


def test_json(sdk, clip):
    result = transcribe(sdk, clip)
    assert isinstance(result, openai.types.audio.Transcription)
    assert result.text.startswith("And Mr. John Dashwood") and "prudently" in result.text


def test_text(sdk, clip):
    result = transcribe(sdk, clip, response_format="text")
    assert isinstance(result, str) and result.startswith("And Mr. John Dashwood") and result.endswith("\n")


def test_srt(sdk, clip):
    subs = list(srt.parse(transcribe(sdk, clip, response_format="srt")))
    assert subs and subs[0].start.total_seconds() < 1 and "Dashwood" in subs[0].content


def test_vtt(sdk, clip):
    captions = webvtt.from_string(transcribe(sdk, clip, response_format="vtt"))
    assert captions and "Dashwood" in captions[0].text


def test_verbose_json_with_words_and_segments(sdk, clip):
    result = transcribe(sdk, clip, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert result.language == "english" and result.duration == pytest.approx(8.0, abs=0.05)
    assert result.segments and result.segments[0].id == 0 and result.segments[0].start < 1
    assert result.words and result.words[0].word == "And" and result.words[0].end > result.words[0].start
    assert " ".join(w.word for w in result.words).startswith("And Mr. John Dashwood")
    assert not hasattr(result.segments[0], "speaker") or result.segments[0].speaker is None


def test_verbose_json_segments_only_by_default(sdk, clip):
    result = transcribe(sdk, clip, response_format="verbose_json", temperature=0.4)
    assert result.segments and result.words is None
    assert {s.temperature for s in result.segments} == {0.4}  # the temperature faster-whisper decoded with


@pytest.fixture(scope="module")
def plain_whisper(clip):
    """Plain faster-whisper on the same file, in this process: its segments and its tokenizer."""
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

    model = WhisperModel(resolve_whisper_model("tiny.en"), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(
        str(clip), language="en", beam_size=5, temperature=0.0, vad_filter=False, without_timestamps=True,
        word_timestamps=True, condition_on_previous_text=False,
    )  # fmt: skip
    return list(segments), Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")


def test_verbose_json_carries_faster_whispers_decoder_statistics(sdk, clip, plain_whisper, server):
    result = transcribe(sdk, clip, response_format="verbose_json")
    (reference, *_), tokenizer = plain_whisper
    first = result.segments[0]
    assert first.text.startswith("And Mr. John Dashwood") and reference.text.strip().startswith("And Mr. John Dashwood")
    assert first.avg_logprob == pytest.approx(reference.avg_logprob, abs=0.05) and first.avg_logprob < 0
    assert first.no_speech_prob == pytest.approx(reference.no_speech_prob, abs=0.05)
    assert first.compression_ratio == pytest.approx(reference.compression_ratio, abs=0.2)
    assert first.temperature == reference.temperature == 0.0
    for s in result.segments:
        assert s.tokens and tokenizer.decode(s.tokens).strip() == s.text and 0 <= s.no_speech_prob <= 1

    # our own json with word timestamps: the same segments, the same values
    with keyed_client(server) as client, open(clip, "rb") as f:
        clip_id = client.post("/api/audio", files={"file": (clip.name, f)}).json()["clip_id"]
        ours = client.post("/api/transcribe", params={"clip_id": clip_id, "diarize": False, "word_timestamps": True})
    assert ours.status_code == 200, ours.text
    stats = ("text", "tokens", "avg_logprob", "compression_ratio", "no_speech_prob", "temperature")
    assert [[s[k] for k in stats] for s in ours.json()["segments"]] == [
        [getattr(s, k) for k in stats] for s in result.segments
    ]
    assert all(s["words"] for s in ours.json()["segments"])


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK's note on translations
def test_translation(sdk, clip):
    with open(clip, "rb") as f:
        result = sdk.audio.translations.create(model="whisper-1", file=f)
    assert isinstance(result, openai.types.audio.Translation) and "Dashwood" in result.text
    with open(clip, "rb") as f:
        assert "Dashwood" in sdk.audio.translations.create(model="whisper-1", file=f, response_format="text")


def test_any_model_name_maps_to_the_configured_model(sdk, clip):
    with open(clip, "rb") as f:
        result = sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=f, language="en", prompt="Dashwood")
    assert "Dashwood" in result.text
    ids = [m.id for m in sdk.models.list().data]
    assert ids == ["whisper-1", "tiny.en"] and sdk.models.retrieve("whisper-1").owned_by == "whospoke"


def test_diarization_extension_and_diarized_json(sdk):
    verbose = transcribe(sdk, TWO_SPEAKERS, response_format="verbose_json", extra_body={"diarize": True, "num_speakers": 2})
    assert {s.speaker for s in verbose.segments} == {"SPEAKER_00", "SPEAKER_01"}
    assert verbose.speakers == ["SPEAKER_00", "SPEAKER_01"]

    diarized = transcribe(
        sdk, TWO_SPEAKERS, response_format="diarized_json", chunking_strategy="auto", extra_body={"num_speakers": 2}
    )
    assert isinstance(diarized, openai.types.audio.TranscriptionDiarized)
    assert [s.speaker for s in diarized.segments] == ["A", "B", "A", "B", "A", "B"]
    assert diarized.segments[1].type == "transcript.text.segment" and "fellow Americans" in diarized.segments[1].text


def test_errors_come_back_as_sdk_exceptions(sdk, clip):
    with pytest.raises(openai.UnprocessableEntityError) as info:
        transcribe(sdk, clip, response_format="docx")
    assert "response_format" in info.value.message and info.value.body["param"] == "response_format"
    with pytest.raises(openai.UnprocessableEntityError):
        transcribe(sdk, clip, temperature=3)
    with pytest.raises(openai.BadRequestError):
        sdk.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b""))
    with pytest.raises(openai.APIStatusError) as too_big:
        sdk.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (6 * 1024 * 1024)))
    assert too_big.value.status_code == 413  # MAX_UPLOAD_MB=5 on this server


def test_a_wrong_key_is_an_authentication_error(server, clip):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            transcribe(bad, clip)
