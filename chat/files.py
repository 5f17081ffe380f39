"""Uploaded files on disk: streamed in under a size limit, named by a random id, typed by sniffing.

The bytes live in ``<data-dir>/chat-files/<id>``; the database keeps the name and type. Only
formats recognised from their first bytes count as images (and are shown inline); everything
else is served as an opaque download, whatever type the uploader claimed, so an uploaded HTML
or SVG file can never run script in the chat's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from litestar.exceptions import ClientException

from .store import StoredFile

__all__ = ["FileStore", "drain", "sniff_image"]

_ID = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}$")
_FLUSH = 1024 * 1024


def sniff_image(head: bytes) -> str | None:
    """The image type of a file from its first bytes, for the formats browsers show safely."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _too_large(limit: int) -> ClientException:
    return ClientException(
        f"file too large: the limit is {limit // (1024 * 1024)} MiB ({limit} bytes)", status_code=413
    )


class FileStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, file_id: str) -> Path | None:
        """Where a file's bytes are; ``None`` for an id that is not one of ours."""
        return self.root / file_id if _ID.match(file_id) else None

    async def save(
        self, chunks: AsyncIterator[bytes], name: str, declared_type: str | None, announced: int | None
    ) -> StoredFile:
        """Stream an upload to disk; 413 past ``max_bytes`` (answered after reading the body, so the
        client sees the answer instead of a reset connection), 422 if it is empty."""
        if announced is not None and announced > self.max_bytes:
            await drain(chunks, self.max_bytes * 4)
            raise _too_large(self.max_bytes)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        file_id = secrets.token_urlsafe(18)
        final = self.root / file_id
        partial = self.root / f".{file_id}.part"
        size, head, buffer = 0, b"", bytearray()
        fd = await asyncio.to_thread(os.open, partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        await drain(chunks, self.max_bytes * 4)
                        raise _too_large(self.max_bytes)
                    if len(head) < 16:
                        head += chunk[: 16 - len(head)]
                    buffer += chunk
                    if len(buffer) >= _FLUSH:
                        await asyncio.to_thread(_write_all, fd, bytes(buffer))
                        buffer.clear()
                if buffer:
                    await asyncio.to_thread(_write_all, fd, bytes(buffer))
                await asyncio.to_thread(os.fsync, fd)
            finally:
                await asyncio.to_thread(os.close, fd)
            if size == 0:
                raise ClientException("the file is empty", status_code=422)
            await asyncio.to_thread(os.replace, partial, final)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        image = sniff_image(head)
        claimed = (declared_type or "").split(";")[0].strip().lower()
        content_type = image or (claimed if _MIME.match(claimed) else "application/octet-stream")
        return StoredFile(file_id, name, content_type, size, image is not None)

    async def remove(self, file_id: str) -> None:
        path = self.path(file_id)
        if path is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def drain(chunks: AsyncIterator[bytes], cap: int) -> None:
    """Read and drop the rest of a refused body, up to ``cap`` bytes."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > cap:
            return
