"""One registry of error codes (shared/core/errors.py CODES), each code defined once: the HTTP ones with
the status they are sent with (the OpenAPI document lists exactly them), the ones the WebSocket protocols
send (LIVE_CODES) with the close code that follows them (the page reads the fatal ones from /web/config),
and a failed job's own. No other module spells a code but to look it up; all are documented, in
docs/api.md and docs/live.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import shared.api.app  # noqa: F401 - imports every route module, so every ServiceError subclass
from shared.api.app import create_app
from shared.core.config import Settings
from shared.core.errors import CODES, HTTP_CODES, HTTP_ERRORS, LIVE_CODES, ServiceError, live_code

ROOT = Path(__file__).resolve().parents[1]
WEBSOCKET_PROTOCOLS = {"live_ws.py", "realtime.py", "realtime_config.py"}  # their own error events
LIVE_MODULES = [ROOT / "shared/api" / name for name in sorted(WEBSOCKET_PROTOCOLS)] + sorted(
    (ROOT / "shared/live").glob("*.py"))
STATIC = ROOT / "shared/api/static"


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_service_error_is_registered_with_its_status():
    classes = list(_subclasses(ServiceError))
    assert len(classes) >= 17
    for cls in [ServiceError, *classes]:
        assert cls.code in CODES, cls
        assert cls.status == CODES[cls.code].status, cls


def test_a_class_with_an_unregistered_code_or_status_fails_at_import():
    with pytest.raises(TypeError, match="not in shared.core.errors.CODES"):
        type("Made", (ServiceError,), {"code": "made_up_code"})
    with pytest.raises(TypeError, match="contradicts"):
        type("Made", (ServiceError,), {"code": "job_not_found", "status": 400})
    with pytest.raises(TypeError, match="not answered with an HTTP status"):
        type("Made", (ServiceError,), {"code": "idle_timeout"})  # a live protocol's code
    with pytest.raises(KeyError):
        live_code("job_not_found")  # not one the live protocols send


def _sources():
    for folder in ("shared", "functions"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != ROOT / "shared/core/errors.py":
                yield path, ast.parse(path.read_text())


LOOKUPS = {"error_code", "live_code"}  # a code looked up in the registry (at import: an unknown one fails)
SENDERS = {"error_response", "openai_error", "_refuse", "send_error", "_error", "error", "_end", "refuse",
           "Problem", "JobError", "ItemFailed"}  # what takes a code to send


def _not_a_code(node: ast.AST, parents: dict) -> bool:
    """An OpenAI error `type` ("server_error" is a code too): {"type": ...}, or a `kind` argument or variable."""
    parent = parents.get(node)
    if isinstance(parent, ast.IfExp):
        return _not_a_code(parent, parents)
    if isinstance(parent, ast.Dict):
        key = parent.keys[parent.values.index(node)] if node in parent.values else None
        return isinstance(key, ast.Constant) and key.value == "type"
    if isinstance(parent, ast.keyword):
        return parent.arg == "kind"
    if isinstance(parent, ast.Assign):
        return [ast.unparse(t) for t in parent.targets] == ["kind"]
    return isinstance(parent, ast.arguments) and "kind" in [a.arg for a in parent.kwonlyargs + parent.args]


def test_no_module_but_the_registry_spells_a_code():
    looked_up, spelled = set(), []
    for path, tree in _sources():
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in LOOKUPS:
                (arg,) = node.args
                assert isinstance(arg, ast.Constant) and arg.value in CODES, (path.name, ast.unparse(node))
                looked_up.add(arg.value)
            elif isinstance(node, ast.Constant) and node.value in CODES and not _not_a_code(node, parents):
                call = parents.get(node)
                if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) in LOOKUPS):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
        for node in ast.walk(tree):  # nor sends one it did not look up (an unregistered one included)
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in SENDERS:
                for arg in [*node.args, *(k.value for k in node.keywords if k.arg != "kind")]:
                    if isinstance(arg, ast.Constant) and re.fullmatch(r"[a-z]+(_[a-z]+)+", str(arg.value)):
                        spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {arg.value!r}")
    assert not spelled, spelled
    assert {"rate_limited", "unauthorized", "too_many_auth_failures", "internal_error", "interrupted"} <= looked_up


def test_generic_codes_are_one_per_status():
    generic = [e for e in CODES.values() if e.generic]
    assert len({e.status for e in generic}) == len(generic)
    assert all(CODES[code].status == status for status, code in HTTP_CODES.items())


def test_the_openapi_document_lists_the_registry(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys="k" * 20, rate_limit_per_min=60)
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json", headers={"x-api-key": "k" * 20}).json()
    code = schema["components"]["schemas"]["ErrorResponse"]["properties"]["error"]["properties"]["code"]
    assert code["enum"] == sorted(HTTP_ERRORS)
    assert "interrupted" not in code["enum"] and "idle_timeout" not in code["enum"]  # not HTTP answers
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    listed = set(re.findall(r"\(([^()]*)\)$", response["description"])[0].split(", "))
                    assert listed == {e.code for e in CODES.values() if e.status == int(status)}, status


# --- the live protocols (LIVE_CODES) ---

# where a live module sends an error: the code must be a registered LiveErrorCode, never a string
LIVE_SENDS = re.compile(r'\b(?:send_error\(\s*\w+,|_error\(|(?<!log)\.error\(|Problem\(|_end\(|refuse\(|ItemFailed\(\s*\w+,)\s*(f?"\w*)')


def test_every_live_code_sent_is_registered_and_every_registered_one_is_sent():
    used = set()
    for path in LIVE_MODULES:
        text = path.read_text()
        assert not LIVE_SENDS.findall(text), (path.name, LIVE_SENDS.findall(text))
        for code in re.findall(r'\blive_code\(\s*"(\w+)"\s*\)', text):
            assert code in LIVE_CODES, (path.name, code)
            used.add(code)
        # a registered code written as a bare string anywhere else (a comparison, a set...); an OpenAI error
        # `type` ("server_error" is one too) is not a code
        rest = re.sub(r'live_code\(\s*"\w+"\s*\)|kind="\w+"|"type": "\w+"', "", text)
        bare = set(re.findall(r'"(\w+)"', rest)) & set(LIVE_CODES)
        assert not bare, (path.name, bare)
    assert used == set(LIVE_CODES)  # no entry that nothing sends


def test_one_table_one_definition():
    assert set(HTTP_ERRORS) | set(LIVE_CODES) | {"interrupted"} == set(CODES)
    assert set(HTTP_ERRORS) & set(LIVE_CODES) == {"unsupported_language"}  # HTTP 422, and a refused session.update
    assert all(e.close is None for e in HTTP_ERRORS.values())


def test_live_close_codes():
    fatal = [e for e in LIVE_CODES.values() if e.fatal]
    assert all(4400 <= e.close < 4500 for e in fatal)
    assert {e.code: e.close for e in fatal} == {
        "invalid_option": 4400, "unsupported_intent": 4400, "session_not_found": 4404, "idle_timeout": 4408,
        "session_too_long": 4413, "audio_undecodable": 4415, "too_many_streams": 4429,
        "too_many_opens": 4429, "server_busy": 4429, "session_expired": 4408, "audio_too_slow": 4408,
        "client_not_reading": 4408}


def test_the_page_reads_the_fatal_live_codes_from_the_config(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    with TestClient(create_app(settings), base_url="http://localhost") as client:  # a host the server answers
        config = client.get("/web/config").json()
    assert config["fatal_live_codes"] == sorted(e.code for e in LIVE_CODES.values() if e.fatal)
    js = "\n".join(p.read_text() for p in STATIC.glob("*.js"))
    assert "fatal_live_codes" in js
    assert not [code for code in LIVE_CODES if f'"{code}"' in js]  # no copy of the registry in the page


def _documented(*names: str) -> set[str]:
    """The words in `code spans` of these docs."""
    text = "\n".join((ROOT / "docs" / name).read_text() for name in names)
    return {word for span in re.findall(r"`([^`\n]+)`", text) for word in re.findall(r"\w+", span)}


def test_every_code_is_documented():
    assert set(CODES) - _documented("api.md", "live.md") == set()
    assert set(LIVE_CODES) - _documented("live.md") == set()


def test_the_live_docs_give_each_code_its_close():
    rows = [line for line in (ROOT / "docs/live.md").read_text().splitlines() if line.startswith("| `")]
    for entry in LIVE_CODES.values():
        mine = [row for row in rows if f"`{entry.code}`" in row.split("|")[1]]
        assert mine, entry.code
        for row in mine:
            closes = re.findall(r"close (44\d\d)", row)
            assert closes == ([str(entry.close)] if entry.fatal else []), (entry.code, row)
