"""Uploaded files: streamed in under a size limit, named by a random id, typed by sniffing.

``FileStore`` keeps the bytes in ``<data-dir>/chat-files/<id>`` (the SQLite store keeps the
name and type); ``chat.redis_files`` keeps them in Redis. Only formats recognised from their
first bytes count as images (and are shown inline); everything else is served as an opaque
download, whatever type the uploader claimed, so an uploaded HTML or SVG file can never run
script in the chat's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path

from litestar.exceptions import ClientException

from shared.datadir import private_dir

from .model import StoredFile

__all__ = ["FileStore", "Files", "drain", "file_type", "new_file_id", "sniff_image", "too_large"]

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


def file_type(head: bytes, declared: str | None) -> tuple[str, bool]:
    """``(content type, is an image)``: images by their bytes, else the claimed type if sane."""
    image = sniff_image(head)
    claimed = (declared or "").split(";")[0].strip().lower()
    return image or (claimed if _MIME.match(claimed) else "application/octet-stream"), image is not None


def new_file_id() -> str:
    return secrets.token_urlsafe(18)


def too_large(limit: int) -> ClientException:
    mib = limit / (1024 * 1024)
    size = f"{mib:g} MiB ({limit} bytes)" if mib >= 1 else f"{limit} bytes"
    return ClientException(f"file too large: the limit is {size}", status_code=413)


class Files(ABC):
    """Where uploads' bytes are kept."""

    max_bytes: int

    @staticmethod
    def valid_id(file_id: str) -> bool:
        """Could this be one of our ids? (Anything else is a 404 without a lookup.)"""
        return _ID.match(file_id) is not None

    @abstractmethod
    async def save(
        self, chunks: AsyncIterator[bytes], name: str, declared_type: str | None, announced: int | None
    ) -> StoredFile:
        """Take an upload: 413 past ``max_bytes`` (after reading the body, so the client sees
        the answer instead of a reset connection), 422 if it is empty."""

    @abstractmethod
    async def remove(self, file_id: str) -> None:
        """Drop a file's bytes (no error if they are gone already)."""

    @abstractmethod
    async def content(self, file_id: str) -> Path | bytes | None:
        """A file's bytes: a path to stream them from, the bytes themselves, or ``None``."""


class FileStore(Files):
    """Uploads as files in ``root``, written under a temporary name and fsynced before use."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, file_id: str) -> Path | None:
        """Where a file's bytes are; ``None`` for an id that is not one of ours."""
        return self.root / file_id if self.valid_id(file_id) else None

    async def content(self, file_id: str) -> Path | None:
        path = self.path(file_id)
        return path if path is not None and await asyncio.to_thread(path.is_file) else None

    async def save(
        self, chunks: AsyncIterator[bytes], name: str, declared_type: str | None, announced: int | None
    ) -> StoredFile:
        if announced is not None and announced > self.max_bytes:
            await drain(chunks, self.max_bytes * 4)
            raise too_large(self.max_bytes)
        await asyncio.to_thread(private_dir, self.root)
        file_id = new_file_id()
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
                        raise too_large(self.max_bytes)
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
        content_type, image = file_type(head, declared_type)
        return StoredFile(file_id, name, content_type, size, image)

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
