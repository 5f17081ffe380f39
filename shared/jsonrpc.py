"""JSON-RPC 2.0 messages for server-to-client requests (pure: no I/O).

The server sends requests down an SSE stream; the client answers with a POSTed response object.
See https://www.jsonrpc.org/specification, sections 4 (request) and 5 (response).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "REJECTED",
    "Answer",
    "InvalidMessage",
    "RemoteError",
    "error_response",
    "notification",
    "parse_answer",
    "request",
    "result_response",
]

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Application range (-32000..-32099 is reserved for implementations): a person said no.
REJECTED = -32001


class InvalidMessage(ValueError):
    """The POSTed object is not a JSON-RPC 2.0 response; the message says which rule it broke."""


class RemoteError(Exception):
    """The client answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"client answered with error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    result: Any = None
    error: RemoteError | None = None


def request(id: str, method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def result_response(id: str, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "result": result}


def error_response(id: str, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": error}


def parse_answer(obj: Any) -> Answer:
    """Validate a response object; raise :class:`InvalidMessage` naming the first broken rule."""
    if not isinstance(obj, dict):
        raise InvalidMessage("a JSON-RPC response must be a JSON object (batches are not accepted)")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidMessage('"jsonrpc" must be exactly "2.0"')
    if "id" not in obj:
        raise InvalidMessage('a response needs the "id" of the request it answers')
    rid = obj["id"]
    if not isinstance(rid, str) or not rid:
        raise InvalidMessage('"id" must be the non-empty string id of the request')
    has_result, has_error = "result" in obj, "error" in obj
    if has_result == has_error:
        raise InvalidMessage('a response must have exactly one of "result" and "error"')
    extra = set(obj) - {"jsonrpc", "id", "result", "error"}
    if extra:
        raise InvalidMessage(f"unknown member(s) in a response: {', '.join(sorted(extra))}")
    if has_result:
        return Answer(rid, result=obj["result"])
    err = obj["error"]
    if not isinstance(err, dict):
        raise InvalidMessage('"error" must be an object with "code" and "message"')
    code, message = err.get("code"), err.get("message")
    if not isinstance(code, int) or isinstance(code, bool):
        raise InvalidMessage('"error.code" must be an integer')
    if not isinstance(message, str):
        raise InvalidMessage('"error.message" must be a string')
    return Answer(rid, error=RemoteError(code, message, err.get("data")))
