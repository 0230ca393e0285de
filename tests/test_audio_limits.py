"""MAX_AUDIO_S: audio longer than the limit is refused at upload with 413 audio_too_long, the duration in
the message, and nothing half-stored left behind; accepted uploads are stored once, as a PCM decode
beside the original, and read back by reference."""

from __future__ import annotations

import re
from concurrent.futures import Future

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, encode_as, load_audio
from jobs_support import ThreadedServer

from shared.api.app import create_app
from shared.media.decode import AudioTooLong, decode, decode_to_pcm
from shared.core.config import Settings
from shared.media.pcm import PcmRef
from shared.pipeline.runner import Runner

LIMIT_S = 15.0  # the fixture is 22 s


class NoModels(Runner):
    def _submit(self, stage, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_exception(RuntimeError("no models in this test"))
        return future


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("limits"), max_audio_s=LIMIT_S)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s:
        s.storage = settings.audio_storage_path
        yield s


def stored_files(storage):
    return sorted(p.name for folder in ("clips", "incoming") for p in (storage / folder).iterdir())


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg"])
def test_too_long_audio_is_refused_on_every_upload_route(server, tmp_path, fmt):
    path = encode_as(ONE_SPEAKER, fmt, tmp_path / f"long.{fmt}")
    before = stored_files(server.storage)
    with server.client() as client:
        for url, data in (("/api/audio", None), ("/api/transcriptions", None),
                          ("/v1/audio/transcriptions", {"model": "whisper-1"})):  # fmt: skip
            with open(path, "rb") as f:
                r = client.post(url, files={"file": (path.name, f)}, data=data)
            assert r.status_code == 413, (url, r.text)
            body = r.json()
            code, message = (body["error"]["code"], body["error"]["message"]) if "error" in body else (
                body["error_code"], body["message"])  # fmt: skip
            assert code == "audio_too_long", body
            seen = float(re.search(r"runs ([\d.]+) s or more", message).group(1))
            assert 15.0 < seen <= 22.1 and "the limit is 15.0 s (MAX_AUDIO_S)" in message, message
        assert client.get("/healthz").status_code == 200
    assert stored_files(server.storage) == before  # nothing half-stored


def test_an_accepted_upload_is_decoded_once_into_pcm_beside_the_original(server):
    settings = Settings(_env_file=None, audio_storage_path=server.storage / "other")
    with ThreadedServer(create_app(settings, runner=NoModels())) as other, other.client() as client:
        with open(ONE_SPEAKER, "rb") as f:
            clip = client.post("/api/audio", files={"file": ("one.flac", f)}).json()
        clip_id = clip["clip_id"]
        pcm = settings.audio_storage_path / "clips" / f"{clip_id}.pcm"
        ref = PcmRef.of(pcm)
        assert clip["duration"] == pytest.approx(ref.duration, abs=1e-3)
        np.testing.assert_allclose(ref.read(), load_audio(ONE_SPEAKER), atol=1e-6)
        assert client.delete(f"/api/audio/{clip_id}").status_code == 200
        assert not pcm.exists()


def test_the_limit_holds_mid_decode_when_the_header_gives_no_duration(tmp_path):
    """A stream without a duration in its header is cut off as soon as the decode passes the limit."""
    duration = len(decode(ONE_SPEAKER).samples) / 16000
    out = tmp_path / "x.pcm"
    with pytest.raises(AudioTooLong) as err:
        decode_to_pcm(ONE_SPEAKER, out, max_seconds=duration - 0.5)  # within the header check's 1 s slack
    assert err.value.limit_s == pytest.approx(duration - 0.5) and not out.exists()
    info = decode_to_pcm(ONE_SPEAKER, out, max_seconds=duration + 0.5)
    assert info.num_samples == PcmRef.of(out).num_samples and info.codec == "flac"
