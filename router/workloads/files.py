"""``/v1/files``: upload (purpose ``batch`` or ``fine-tune``), list, retrieve, content, delete.

Contents are written under the data directory, metadata goes to the ``wl_files`` table of
the ledger file. An upload is checked before it is kept: its size against the purpose's
limit, and every line as JSON of the shape its purpose needs, so a bad file fails at
upload with the line number instead of later inside a batch.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from suanli.router.core.keys import CLIENT_KEY
from suanli.router.errors import BadRequestError
from suanli.router.workloads.db import WorkloadDB

__all__ = ["BATCH_URLS", "FileStore", "file_routes", "not_found", "owner_of", "owned"]

# purpose -> largest upload in bytes (OpenAI's limits)
MAX_BYTES = {"batch": 200 * 1024 * 1024, "fine-tune": 512 * 1024 * 1024}
MAX_BATCH_LINES = 50_000
BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_CHUNK = 256 * 1024


def not_found(kind: str, ident: str, param: str) -> BadRequestError:
    """The 404 of an unknown file, batch or job id."""
    return BadRequestError(f"no {kind} with id {ident!r}", param=param, code="not_found", status=404)


def owner_of(request: web.Request) -> str | None:
    """The virtual key id that owns what this request creates and bounds what it sees.

    None for the master key and for open mode (no master key): they see every object.
    """
    key = request.get(CLIENT_KEY)
    return key.key_id if key is not None else None


def owned(owner: str | None) -> tuple[str, tuple[object, ...]]:
    """The SQL condition (and its parameters) of the rows ``owner`` may see."""
    return ("", ()) if owner is None else (" AND key_id = ?", (owner,))


def file_object(row: dict) -> dict:
    """A ``wl_files`` row as the OpenAI file object."""
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


class FileStore:
    """Files on disk with their metadata in the workload tables."""

    def __init__(self, db: WorkloadDB, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock

    def get(self, file_id: str, owner: str | None = None) -> dict:
        """A live file; another key's file is as unknown as a missing one (404)."""
        mine, params = owned(owner)
        row = self.db.row(f"SELECT * FROM wl_files WHERE id = ? AND deleted = 0{mine}", (file_id, *params))
        if row is None:
            raise not_found("file", file_id, "file_id")
        return row

    def path(self, file_id: str, owner: str | None = None) -> Path:
        return Path(self.get(file_id, owner)["path"])

    def add(
        self, *, purpose: str, filename: str, data: bytes, lines: int = 0, key_id: str | None = None
    ) -> dict:
        """Keep ``data`` as a new file (batch output and error files)."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        path = self.db.files_dir / file_id
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return self._record(file_id, purpose, filename, len(data), path, lines, key_id)

    def _record(
        self, file_id: str, purpose: str, filename: str, size: int, path: Path, lines: int, key_id: str | None
    ) -> dict:
        created = int(self.clock().timestamp())
        self.db.execute(
            "INSERT INTO wl_files (id, purpose, filename, bytes, created_at, path, lines, key_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (file_id, purpose, filename, size, created, str(path), lines, key_id),
        )
        return self.get(file_id)

    async def upload(self, request: web.Request, owner: str | None = None) -> dict:
        """Read a multipart upload (``purpose``, ``file``), check it, keep it."""
        if not request.content_type.startswith("multipart/"):
            raise BadRequestError(
                "upload the file as multipart/form-data with fields purpose and file",
                param="file",
                code="unsupported_media_type",
                status=415,
            )
        purpose: str | None = None
        saved: tuple[str, Path, int] | None = None
        try:
            try:
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader):
                        continue
                    if part.name == "purpose":
                        purpose = (await part.text()).strip()
                    elif part.name == "file":
                        if saved is not None:
                            raise BadRequestError(
                                "send one file per upload", param="file", code="invalid_multipart"
                            )
                        # curl -F may send the file before the purpose: the largest limit holds until known.
                        limit = MAX_BYTES[purpose] if purpose in MAX_BYTES else max(MAX_BYTES.values())
                        saved = await self._save(part, limit)
            except (ValueError, UnicodeDecodeError, HttpProcessingError) as exc:
                # aiohttp's multipart reader: no or a wrong boundary, a bad part header, a cut body
                raise BadRequestError(
                    f"the multipart body is malformed ({type(exc).__name__})",
                    param="file",
                    code="invalid_multipart",
                ) from None
            if purpose not in MAX_BYTES:
                raise _bad_purpose(purpose)
            if saved is None:
                raise BadRequestError("missing required parameter: 'file'", param="file")
            filename, tmp, size = saved
            if size > MAX_BYTES[purpose]:
                raise _too_large(MAX_BYTES[purpose])
            lines = await asyncio.to_thread(check_lines, tmp, purpose)
            file_id = tmp.stem
            path = tmp.with_suffix("")
            os.replace(tmp, path)
            saved = None
            return self._record(file_id, purpose, filename, size, path, lines, owner)
        finally:
            if saved is not None:
                saved[1].unlink(missing_ok=True)

    async def _save(self, part: BodyPartReader, limit: int) -> tuple[str, Path, int]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        tmp = self.db.files_dir / f"{file_id}.part"
        size = 0
        try:
            with tmp.open("wb") as out:
                while chunk := await part.read_chunk(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    out.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if size == 0:
            tmp.unlink(missing_ok=True)
            raise BadRequestError("the file is empty", param="file", code="invalid_file")
        return part.filename or "upload.jsonl", tmp, size

    def listing(self, query: dict[str, str], owner: str | None = None) -> dict:
        purpose = query.get("purpose")
        limit = _limit(query.get("limit"), 10_000)
        order = "ASC" if query.get("order") == "asc" else "DESC"
        mine, mine_params = owned(owner)
        sql = "SELECT * FROM wl_files WHERE deleted = 0" + mine
        params: list[object] = list(mine_params)
        if purpose:
            sql += " AND purpose = ?"
            params.append(purpose)
        rows = self.db.rows(sql + f" ORDER BY created_at {order}, rowid {order}", params)
        return page([file_object(r) for r in rows], query.get("after"), limit)

    def delete(self, file_id: str, owner: str | None = None) -> dict:
        row = self.get(file_id, owner)
        self.db.execute("UPDATE wl_files SET deleted = 1 WHERE id = ?", (file_id,))
        Path(row["path"]).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}


def page(items: list[dict], after: str | None, limit: int) -> dict:
    """An OpenAI list page of ``items`` after the id ``after``."""
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }


def _limit(raw: str | None, most: int) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequestError(f"limit must be an integer between 1 and {most}", param="limit")
    return int(raw)


def _too_large(limit: int) -> BadRequestError:
    return BadRequestError(
        f"the file is larger than the {limit // (1024 * 1024)} MB allowed for this purpose",
        param="file",
        code="file_too_large",
        status=413,
    )


def _bad_purpose(purpose: str | None) -> BadRequestError:
    if purpose is None:
        return BadRequestError("missing required parameter: 'purpose'", param="purpose")
    return BadRequestError(f"purpose {purpose!r} is not supported: use batch or fine-tune", param="purpose")


def check_lines(path: Path, purpose: str) -> int:
    """The number of requests in a JSONL file, or a BadRequestError naming the first bad line."""
    seen: set[str] = set()
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _bad_line(number, f"not valid JSON ({exc})") from exc
            if not isinstance(item, dict):
                raise _bad_line(number, "must be a JSON object")
            if purpose == "batch":
                _check_batch_line(number, item, seen)
            else:
                _check_training_line(number, item)
            count += 1
    if count == 0:
        raise BadRequestError("the file has no lines", param="file", code="invalid_file")
    if purpose == "batch" and count > MAX_BATCH_LINES:
        raise BadRequestError(
            f"a batch file may hold at most {MAX_BATCH_LINES} requests, this one has {count}",
            param="file",
            code="invalid_file",
        )
    return count


def _check_batch_line(number: int, item: dict, seen: set[str]) -> None:
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _bad_line(number, "custom_id must be a non-empty string")
    if custom_id in seen:
        raise _bad_line(number, f"custom_id {custom_id!r} is used twice; each request needs its own")
    seen.add(custom_id)
    if item.get("method") != "POST":
        raise _bad_line(number, "method must be POST")
    if item.get("url") not in BATCH_URLS:
        raise _bad_line(number, f"url must be one of {', '.join(BATCH_URLS)}")
    body = item.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _bad_line(number, "body must be an object with a model")


def _check_training_line(number: int, item: dict) -> None:
    messages = item.get("messages")
    if isinstance(messages, list) and messages:
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _bad_line(number, "every message needs a role")
        return
    if isinstance(item.get("prompt"), str) and isinstance(item.get("completion"), str):
        return
    raise _bad_line(number, "a training example needs messages (chat) or prompt and completion")


def _bad_line(number: int, problem: str) -> BadRequestError:
    return BadRequestError(f"line {number} of the file: {problem}", param="file", code="invalid_file")


def file_routes(app: web.Application, store: Callable[[web.Request], FileStore]) -> None:
    """Register ``/v1/files`` on ``app``; ``store(request)`` finds the FileStore."""

    async def create(request: web.Request) -> web.Response:
        return web.json_response(file_object(await store(request).upload(request, owner_of(request))))

    async def listing(request: web.Request) -> web.Response:
        return web.json_response(store(request).listing(dict(request.query), owner_of(request)))

    async def retrieve(request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        return web.json_response(file_object(store(request).get(file_id, owner_of(request))))

    async def content(request: web.Request) -> web.StreamResponse:
        path = store(request).path(request.match_info["file_id"], owner_of(request))
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def delete(request: web.Request) -> web.Response:
        return web.json_response(store(request).delete(request.match_info["file_id"], owner_of(request)))

    app.router.add_post("/v1/files", create)
    app.router.add_get("/v1/files", listing)
    app.router.add_get("/v1/files/{file_id}", retrieve)
    app.router.add_get("/v1/files/{file_id}/content", content)
    app.router.add_delete("/v1/files/{file_id}", delete)
