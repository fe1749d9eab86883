"""The API key is read from the environment and masked out of text in one module, citing_trl/teacher/secrets.py;
a failing request whose server echoes the key produces an error message masked through that helper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from citing_trl.teacher import Teacher, TeacherConfig, TeacherError, secrets
from tests.helpers.fault_server import Fault, FaultServer

PACKAGE = Path(__file__).resolve().parents[1] / "citing_trl" / "teacher"
SECRET = "sk-citing-secrets-Hq4Tz9Vb2Nc7Xe1Lm6Pw0"


def test_reading_and_masking(monkeypatch):
    monkeypatch.delenv("CITING_TEST_SECRET", raising=False)
    assert secrets.read_api_key("CITING_TEST_SECRET") == "" and secrets.client_api_key("CITING_TEST_SECRET") == "EMPTY"
    assert secrets.redactor("CITING_TEST_SECRET")("nothing to hide") == "nothing to hide"
    monkeypatch.setenv("CITING_TEST_SECRET", SECRET)
    assert secrets.read_api_key("CITING_TEST_SECRET") == SECRET == secrets.client_api_key("CITING_TEST_SECRET")
    clean = secrets.redactor("CITING_TEST_SECRET")
    assert clean(f"Bearer {SECRET}, again {SECRET}.") == "Bearer ***, again ***."
    assert secrets.redact("abc", "") == "abc"


def test_a_failing_request_names_no_key_and_is_masked_by_the_helper(monkeypatch, tmp_path):
    monkeypatch.setenv("CITING_TEST_SECRET", SECRET)
    marker = "<masked by citing_trl.teacher.secrets>"
    monkeypatch.setattr(secrets, "MASK", marker)  # proves the text went through the one helper
    with FaultServer() as server:
        server.script("echo", [Fault.error(401, echo_auth=True)])
        config = TeacherConfig(backend="openai", model="m", base_url=server.base_url, api_key_env="CITING_TEST_SECRET",
                               max_retries=0, timeout=5.0)
        teacher = Teacher(config, cache_path=tmp_path / "c.jsonl")
        with pytest.raises(TeacherError) as info:
            teacher.complete([[{"role": "user", "content": "echo my key"}]])
        assert {h.authorization for h in server.hits} == {f"Bearer {SECRET}"}  # the key was sent...
    err = info.value
    for text in (str(err), repr(err), err.reason):
        assert SECRET not in text
    assert f"you sent Authorization: Bearer {marker}" in str(err)  # ...echoed back, and masked by secrets.redact
    assert "HTTP 401" in err.reason and "request #0" in str(err)


def test_only_the_secrets_module_reads_the_environment_or_masks():
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        if name == "secrets.py":
            continue
        text = path.read_text()
        assert not re.search(r"\bos\.environ\b|\bgetenv\(|\benviron\[", text), f"{name} reads the environment"
        assert '"***"' not in text and ".replace(secret" not in text, f"{name} masks the key itself"
