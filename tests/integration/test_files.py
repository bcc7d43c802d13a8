"""/v1/files through the official openai SDK: upload, list, retrieve, content, delete, bad files."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import ProxyThread, running_proxy
from tests.integration.workload_helpers import batch_file, night_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    with running_proxy(night_config(tmp_path_factory.mktemp("files"))) as running:
        yield running


@pytest.fixture
def client(proxy: ProxyThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def test_upload_list_retrieve_content_delete(client: openai.OpenAI, tmp_path: Path):
    path = batch_file(tmp_path, 3)
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.filename == "input.jsonl"
    assert uploaded.bytes == path.stat().st_size
    assert client.files.retrieve(uploaded.id).purpose == "batch"
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]
    assert uploaded.id not in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)


def test_training_file_is_checked_for_messages(client: openai.OpenAI, tmp_path: Path):
    good = tmp_path / "train.jsonl"
    good.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    )
    assert client.files.create(file=good.open("rb"), purpose="fine-tune").purpose == "fine-tune"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"text": "no messages"}\n')
    with pytest.raises(openai.BadRequestError, match="line 2"):
        client.files.create(file=bad.open("rb"), purpose="fine-tune")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n'
            b"{oops\n",
            "line 2 of the file: not valid JSON",
        ),
        (
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n'
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n',
            "custom_id 'a' is used twice",
        ),
        (
            b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m"}}\n',
            "method must be POST",
        ),
        (
            b'{"custom_id": "a", "method": "POST", "url": "/v1/images", "body": {"model": "m"}}\n',
            "url must be",
        ),
        (b"\n\n", "no lines"),
    ],
)
def test_bad_batch_files_are_refused_with_the_line(
    client: openai.OpenAI, tmp_path: Path, content: bytes, message: str
):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(openai.BadRequestError, match=message) as caught:
        client.files.create(file=path.open("rb"), purpose="batch")
    assert caught.value.body["param"] == "file"


def test_unknown_purpose_and_missing_file(client: openai.OpenAI, tmp_path: Path):
    path = batch_file(tmp_path, 1)
    with pytest.raises(openai.BadRequestError, match="purpose 'assistants' is not supported"):
        client.files.create(file=path.open("rb"), purpose="assistants")
    with pytest.raises(openai.NotFoundError, match="file-nope") as caught:
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert caught.value.body["param"] == "input_file_id"


def test_batch_create_checks_its_arguments(client: openai.OpenAI, tmp_path: Path):
    uploaded = client.files.create(file=batch_file(tmp_path, 1).open("rb"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="soon"
        )  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/moderations",  # type: ignore[arg-type]
            completion_window="24h",
        )
    train = tmp_path / "t.jsonl"
    train.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    tuning = client.files.create(file=train.open("rb"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="not batch"):
        client.batches.create(
            input_file_id=tuning.id, endpoint="/v1/chat/completions", completion_window="24h"
        )


def test_file_sent_before_its_purpose_is_accepted(proxy: ProxyThread, tmp_path: Path):
    # curl -F file=@x -F purpose=batch sends the parts in that order.
    content = batch_file(tmp_path, 2).read_bytes()
    reply = httpx.post(
        f"{proxy.base_url}/files",
        files=[("file", ("late.jsonl", content, "application/jsonl")), ("purpose", (None, "batch"))],
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert (reply.json()["purpose"], reply.json()["bytes"]) == ("batch", len(content))
    missing = httpx.post(f"{proxy.base_url}/files", files=[("file", ("x.jsonl", content))], timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "purpose"
