"""Uploads kept in Redis, so every instance can serve every file (no shared disk needed).

``P file:<id>`` is a hash: ``b`` the bytes, ``name``, ``type``, ``size``, ``image`` and, once
the upload is attached to a message, ``msg``. Until then it expires after ``pending_ttl``
seconds, so an upload whose message was never stored (a 503 in between) does not stay behind.
Deleting the message, or its leaving the retained history, deletes the file.

The cost: bytes count against Redis memory (and its AOF), at most ``max_file_bytes`` (10 MiB
by default) per file, held in this process's memory while the upload is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.exceptions import ClientException

from .files import Files, drain, file_type, new_file_id, too_large
from .model import StoredFile
from .redis_conn import RedisConn

__all__ = ["RedisFiles"]


class RedisFiles(Files):
    def __init__(self, conn: RedisConn, max_bytes: int, *, pending_ttl: float = 3600.0) -> None:
        self.conn = conn
        self.max_bytes = max_bytes
        self.pending_ttl = pending_ttl

    async def save(
        self, chunks: AsyncIterator[bytes], name: str, declared_type: str | None, announced: int | None
    ) -> StoredFile:
        if announced is not None and announced > self.max_bytes:
            await drain(chunks, self.max_bytes * 4)
            raise too_large(self.max_bytes)
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > self.max_bytes:
                await drain(chunks, self.max_bytes * 4)
                raise too_large(self.max_bytes)
        if not body:
            raise ClientException("the file is empty", status_code=422)
        content_type, image = file_type(bytes(body[:16]), declared_type)
        file = StoredFile(new_file_id(), name, content_type, len(body), image)
        key = self.conn.key("file", file.id)
        fields = {"b": bytes(body), "name": name, "type": content_type, "size": len(body), "image": int(image)}
        async with self.conn.raw.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(key, int(self.pending_ttl * 1000))
            await pipe.execute()
        return file

    async def remove(self, file_id: str) -> None:
        await self.conn.raw.delete(self.conn.key("file", file_id))

    async def content(self, file_id: str) -> bytes | None:
        data = await self.conn.raw.hget(self.conn.key("file", file_id), "b")
        return data if isinstance(data, bytes) else None
