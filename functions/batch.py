"""Many files, every output format: the library behind the two batch entry points (find inputs, shard
them, transcribe one, write its outputs). It is not an entry point itself:

    modal run -m functions.app::batch --src DIR|LIST|URL,...   (functions/app.py: `run_batch` fans out)
    python -m functions.k8s shard --input ... --output ...     (functions/k8s.py: one Indexed Job pod)

The transcription itself is `shared.pipeline.flow`, the same code the API and the CLI run; only the
Runner differs (Modal functions, or models in-process).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from shared.media.decode import decode
from shared.core.config import Settings
from shared.core.domain import OutputFormat, TranscribeOptions
from shared.pipeline.flow import transcribe
from shared.service.formats import render, to_rttm
from shared.pipeline.runner import Runner
from shared.service.transcription import checked_options
from shared.media.clip_store import atomic_write

AUDIO_SUFFIXES = frozenset(
    {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".webm", ".mkv", ".wma", ".aiff", ".aif"}
)
ALL_FORMATS: tuple[str, ...] = tuple(f.value for f in OutputFormat)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

log = logging.getLogger(__name__)


def is_url(entry: str) -> bool:
    return urlparse(entry).scheme in ("http", "https")


def discover(spec: str | Sequence[str]) -> list[str]:
    """Inputs from a folder (its audio files, recursively, sorted), a list file (.txt/.list: one path or
    URL a line, '#' comments), a comma-separated string, or a sequence of paths/URLs."""
    if not isinstance(spec, str):
        return [str(s) for s in spec]
    entries: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part)
        if not is_url(part) and path.is_dir():
            entries += sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        elif not is_url(part) and path.suffix.lower() in (".txt", ".list") and path.is_file():
            lines = (line.strip() for line in path.read_text().splitlines())
            entries += [line for line in lines if line and not line.startswith("#")]
        else:
            entries.append(part)
    return entries


def shard(items: Sequence[str], index: int, count: int) -> list[str]:
    """The items of shard `index` of `count` (round robin, so long and short files spread evenly)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    return list(items[index::count])


def output_stem(entry: str, root: str | None = None) -> str:
    """A file-system-safe, collision-free name for an input's outputs."""
    if is_url(entry):
        name = PurePosixPath(urlparse(entry).path).stem or "audio"
        digest = hashlib.sha1(entry.encode()).hexdigest()[:8]
        return f"{_UNSAFE.sub('_', name)}-{digest}"
    path = Path(entry)
    if root:
        try:
            rel = path.resolve().relative_to(Path(root).resolve())
            return _UNSAFE.sub("_", str(rel.with_suffix("")).replace("/", "__"))
        except ValueError:
            pass
    return _UNSAFE.sub("_", path.stem) or "audio"


def fetch(entry: str, *, max_bytes: int) -> bytes:
    """The bytes of a path or an http(s) URL (at most `max_bytes`)."""
    if not is_url(entry):
        data = Path(entry).read_bytes()
    else:
        import httpx

        chunks, size = [], 0
        with httpx.stream("GET", entry, follow_redirects=True, timeout=httpx.Timeout(30.0, read=300.0)) as response:
            response.raise_for_status()
            for part in response.iter_bytes():
                size += len(part)
                if size > max_bytes:
                    raise ValueError(f"{entry}: larger than {max_bytes} bytes")
                chunks.append(part)
        data = b"".join(chunks)
    if len(data) > max_bytes:
        raise ValueError(f"{entry}: larger than {max_bytes} bytes")
    return data


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for item in (i.strip().lower() for i in items):
        if item == "all":
            return list(ALL_FORMATS)
        if item:
            out.append(OutputFormat(item).value)  # ValueError names a bad format
    return out or list(ALL_FORMATS)


def transcribe_audio(
    data: bytes | str | Path,
    options: TranscribeOptions,
    runner: Runner,
    settings: Settings,
    formats: Iterable[str] = ALL_FORMATS,
    *,
    file_id: str = "audio",
) -> dict[str, str]:
    """Decode, run the shared pipeline, render every requested format: {format: text}."""
    options = checked_options(options, settings.whisper_model)  # the batch input's edge: its one check
    samples = decode(data).samples
    result = transcribe(samples, options, runner, batch_size=settings.batch_size)
    return {
        fmt: to_rttm(result, file_id) if fmt == "rttm" else render(result, fmt, include_words=options.word_timestamps)
        for fmt in formats
    }


def outputs_exist(out_dir: Path, stem: str, formats: Iterable[str]) -> bool:
    return all((Path(out_dir) / f"{stem}.{fmt}").is_file() for fmt in formats)


def write_outputs(out_dir: Path, stem: str, rendered: dict[str, str]) -> list[Path]:
    """Write each rendered format atomically to `out_dir/stem.<format>`."""
    paths = []
    for fmt, text in rendered.items():
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write(path, text.encode("utf-8"))
        paths.append(path)
    return paths


def transcribe_input(
    source: bytes | str, name: str, options_json: str, formats: list[str], runner: Runner, settings: Settings
) -> dict:
    """One input of a batch: audio bytes or an http(s) URL -> {"name", "outputs": {format: text}} or
    {"name", "error"} (an error is returned, not raised, so one bad file does not stop the batch)."""
    try:
        data = source if isinstance(source, bytes) else fetch(source, max_bytes=settings.max_upload_bytes)
        options = TranscribeOptions.model_validate_json(options_json)
        return {"name": name, "outputs": transcribe_audio(data, options, runner, settings, formats, file_id=name)}
    except Exception as exc:  # noqa: BLE001 - reported per file
        log.exception("batch input %s failed", name)
        return {"name": name, "error": f"{type(exc).__name__}: {exc}"}


def batch_inputs(src: str) -> list[tuple[str, str]]:
    """(entry, output name) per input: a local path or an http(s) URL."""
    root = src if Path(src).is_dir() else None
    return [(entry, output_stem(entry, root)) for entry in discover(src)]


def _payloads(entries: list[str]):
    """Local files are read one at a time as the fan-out consumes them; URLs are fetched remotely."""
    for entry in entries:
        yield entry if is_url(entry) else Path(entry).read_bytes()


def run_batch(
    src: str, out: str, options: TranscribeOptions, formats: list[str], transcribe, *, skip_existing: bool = True
) -> dict[str, int]:
    """Fan the inputs out over `transcribe.map` (the transcribe_file function) and write each result as
    it arrives, with a progress bar."""
    from tqdm import tqdm

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = batch_inputs(src)
    todo = [(e, n) for e, n in items if not (skip_existing and outputs_exist(out_dir, n, formats))]
    counts = {"inputs": len(items), "skipped": len(items) - len(todo), "done": 0, "failed": 0}
    if not todo:
        return counts
    results = transcribe.map(
        _payloads([e for e, _ in todo]),
        [n for _, n in todo],
        kwargs={"options_json": options.model_dump_json(), "formats": formats},
        order_outputs=False,
    )
    with tqdm(total=len(todo), unit="file", desc="transcribing") as bar:
        for result in results:
            if "error" in result:
                counts["failed"] += 1
                tqdm.write(f"FAILED {result['name']}: {result['error']}")
            else:
                write_outputs(out_dir, result["name"], result["outputs"])
                counts["done"] += 1
            bar.update()
    return counts
