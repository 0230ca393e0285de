"""OpenAI's known speakers on /v1/audio/transcriptions: `known_speaker_names[]` paired by position with
`known_speaker_references[]`, each reference a data URL of 2-10 s of audio (data:audio/wav;base64,...).

The official SDKs send both as repeated multipart form fields named with brackets; the bare names are
accepted too. Each reference is decoded into a staged file (like an upload) and checked for its length
here; the voiceprints are made by VoiceService.references, and nothing is stored. References imply
diarization. The data URLs never appear in an error message (nor anywhere else we log).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from shared.core.domain import SAMPLE_RATE
from shared.core.errors import InvalidParameter, InvalidVoiceSample, ServiceError, TooLittleSpeech
from shared.media.clip_store import ClipStore
from shared.media.decode import AudioDecodeError, AudioTooLong, decode_stream
from shared.voices.model import checked_name

NAMES = "known_speaker_names"
REFERENCES = "known_speaker_references"
FIELDS = (NAMES, f"{NAMES}[]", REFERENCES, f"{REFERENCES}[]")
MAX_KNOWN_SPEAKERS = 4  # as OpenAI
MIN_REFERENCE_S, MAX_REFERENCE_S = 2.0, 10.0  # as OpenAI documents
SLACK_S = 0.05  # resampling may add or drop a few samples at the ends
MAX_REFERENCE_BYTES = 4 * 1024 * 1024  # one reference's audio: 10 s of 48 kHz stereo float is 3.7 MB
# the multipart parser's limit on one field: a reference's data URL (base64 is 4/3 of the bytes) and its header
FORM_PART_BYTES = MAX_REFERENCE_BYTES * 4 // 3 + 4096
AUDIO_MEDIA_TYPES = ("audio/", "video/", "application/ogg", "application/octet-stream")


@dataclass(frozen=True)
class KnownSpeakers:
    names: list[str]
    audio: list[bytes]  # each reference's decoded bytes, in the names' order

    def __bool__(self) -> bool:
        return bool(self.names)


def _error(cls: type[ServiceError], param: str, message: str) -> ServiceError:
    exc = cls(message)
    exc.param = param  # type: ignore[attr-defined]
    return exc


def known_speakers_in(form) -> KnownSpeakers:
    """The pairs a form carries (none: an empty KnownSpeakers), with names and data URLs checked."""
    names = [v for k, v in form.multi_items() if k in (NAMES, f"{NAMES}[]")]
    urls = [v for k, v in form.multi_items() if k in (REFERENCES, f"{REFERENCES}[]")]
    if any(not isinstance(v, str) for v in names + urls):
        raise _error(InvalidParameter, REFERENCES, f"send {NAMES}[] and {REFERENCES}[] as form fields, not files")
    if len(names) != len(urls):
        raise _error(
            InvalidParameter, NAMES,
            f"{len(names)} {NAMES}[] but {len(urls)} {REFERENCES}[]: give one name per reference, in the same order",
        )  # fmt: skip
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise _error(InvalidParameter, NAMES, f"at most {MAX_KNOWN_SPEAKERS} known speakers per request")
    checked = []
    for i, name in enumerate(names):
        try:
            checked.append(checked_name(name))
        except ServiceError as exc:
            raise _error(type(exc), NAMES, f"{NAMES}[{i}]: {exc.message}") from None
    if len({n.casefold() for n in checked}) != len(checked):
        raise _error(InvalidVoiceSample, NAMES, f"{NAMES}[]: every name must be different")
    return KnownSpeakers(checked, [_audio_of(i, url) for i, url in enumerate(urls)])


def _audio_of(i: int, url: str) -> bytes:
    """The bytes of a base64 data URL of audio: data:<audio media type>[;params];base64,<data>."""
    param = f"{REFERENCES}[{i}]"
    header, comma, data = url.partition(",")
    parts = header.removeprefix("data:").split(";") if header.startswith("data:") else []
    media_type = parts[0].strip().lower() if parts else ""
    if not comma or not parts or parts[-1].strip().lower() != "base64":
        raise _error(InvalidVoiceSample, REFERENCES, f"{param} is not a base64 data URL (data:audio/wav;base64,...)")
    if not media_type.startswith(AUDIO_MEDIA_TYPES):
        raise _error(
            InvalidVoiceSample, REFERENCES, f"{param} is a data URL of {media_type or 'no media type'}, not of audio"
        )
    data = "".join(data.split())  # line breaks some encoders insert
    if len(data) > MAX_REFERENCE_BYTES * 4 // 3 + 4:
        raise _error(
            InvalidVoiceSample, REFERENCES,
            f"{param} holds more than {MAX_REFERENCE_BYTES // (1024 * 1024)} MB of audio; "
            f"a reference is {MIN_REFERENCE_S:g}-{MAX_REFERENCE_S:g} s",
        )  # fmt: skip
    try:
        audio = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _error(InvalidVoiceSample, REFERENCES, f"{param}: the data after 'base64,' is not valid base64") from None
    if not audio:
        raise _error(InvalidVoiceSample, REFERENCES, f"{param} holds no audio")
    return audio


async def stage_references(known: KnownSpeakers, store: ClipStore) -> list[Path]:
    """Each reference written to a staged file in the store's incoming folder (the caller deletes them,
    or VoiceService.references does as it reads them), its length checked: 2-10 s of decodable audio."""
    staged: list[Path] = []
    try:
        for i, audio in enumerate(known.audio):
            path = store.incoming_file()
            staged.append(path)
            await run_in_threadpool(path.write_bytes, audio)
            await run_in_threadpool(_check_length, i, path)
        return staged
    except BaseException:
        for path in staged:
            path.unlink(missing_ok=True)
        raise


def _check_length(i: int, path: Path) -> None:
    param = f"{REFERENCES}[{i}]"
    limit = int((MAX_REFERENCE_S + SLACK_S) * SAMPLE_RATE)
    seen = 0

    def count(piece) -> None:
        nonlocal seen
        seen += len(piece)
        if seen > limit:  # stop decoding at once: the rest is not needed
            raise AudioTooLong(seen / SAMPLE_RATE, MAX_REFERENCE_S)

    try:
        seconds = decode_stream(path, count, max_seconds=MAX_REFERENCE_S + SLACK_S).duration
    except AudioTooLong as exc:
        raise _error(
            InvalidVoiceSample, REFERENCES,
            f"{param} runs {exc.seconds_seen:.1f} s or more; a reference must be "
            f"{MIN_REFERENCE_S:g}-{MAX_REFERENCE_S:g} s of audio",
        ) from None  # fmt: skip
    except AudioDecodeError:
        raise _error(InvalidVoiceSample, REFERENCES, f"{param} is not audio that can be decoded") from None
    if seconds < MIN_REFERENCE_S - SLACK_S:
        raise _error(
            TooLittleSpeech, REFERENCES,
            f"{param} runs {seconds:.1f} s; a reference must be {MIN_REFERENCE_S:g}-{MAX_REFERENCE_S:g} s of audio",
        )  # fmt: skip
