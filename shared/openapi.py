"""Each app's OpenAPI document, at ``<prefix>/schema/openapi.json``.

An app passes ``openapi_config=api_docs(prefix, title, description)`` and
``plugins=[STRICT_STRUCTS]``, declares each handler's errors with
``raises=shared.errors.errors(...)``, and gives a handler that answers a ``File`` (its HTML page)
``operation_class=FileOperation``.

JSON only: Litestar's HTML viewers (Swagger, Redoc, Scalar) load their scripts from a CDN, which
the apps' Content-Security-Policy forbids. Point any viewer, or a fuzzer such as schemathesis,
at the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar._openapi.schema_generation.schema import SchemaCreator
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.typing import FieldDefinition

__all__ = ["JSONRPC_RESPONSE", "STRICT_STRUCTS", "FileOperation", "api_docs", "read_body", "schema_url"]


def schema_url(prefix: str) -> str:
    return f"{prefix}/schema/openapi.json"


def api_docs(prefix: str, title: str, description: str) -> OpenAPIConfig:
    """The OpenAPI config of the app under ``prefix``; handler docstrings become descriptions."""
    return OpenAPIConfig(
        title=title,
        version="1.0.0",
        description=description,
        path=f"{prefix}/schema",
        render_plugins=[JsonRenderPlugin()],
        use_handler_docstrings=True,
    )


class _StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar documents a msgspec ``Struct`` as open to other fields even when it is declared
    ``forbid_unknown_fields=True`` (a 400 for any other field): say ``additionalProperties: false``."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


# Litestar consults an app's own schema plugins before its built-in ones.
STRICT_STRUCTS = _StrictStructSchemaPlugin()


@dataclass
class FileOperation(Operation):
    """``operation_class=FileOperation`` on a handler that answers a ``File``: Litestar documents its
    ``Last-Modified`` as an ISO 8601 date-time, but it is an HTTP-date, ``Wed, 25 Nov 2026 09:27:31
    GMT`` (RFC 9110, section 5.6.7), and a client validating the answer would reject it."""

    def __post_init__(self) -> None:
        for response in (self.responses or {}).values():
            header = (response.headers or {}).get("last-modified") if isinstance(response, OpenAPIResponse) else None
            if isinstance(header, OpenAPIHeader):
                header.schema = Schema(type=OpenAPIType.STRING, description="an HTTP-date (RFC 9110, section 5.6.7)")


def read_body(media_type: str, schema: Schema, description: str) -> type[Operation]:
    """``operation_class=read_body(...)`` for a handler that reads its body itself, which Litestar
    cannot see (it documents a ``data`` argument only): an upload streamed with
    ``request.stream()``, or JSON read with ``request.json()`` to answer in its own words."""

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            content = {media_type: OpenAPIMediaType(schema=schema)}
            self.request_body = RequestBody(content=content, description=description, required=True)

    return BodyOperation


_ANY = Schema()
# A JSON-RPC 2.0 response object (https://www.jsonrpc.org/specification#response_object), as the
# correlation endpoints take them; shared.jsonrpc.parse_answer checks the rest.
JSONRPC_RESPONSE = Schema(
    type=OpenAPIType.OBJECT,
    required=["jsonrpc", "id"],
    properties={
        "jsonrpc": Schema(const="2.0"),
        "id": Schema(type=[OpenAPIType.STRING, OpenAPIType.INTEGER]),
        "result": _ANY,
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["code", "message"],
            properties={
                "code": Schema(type=OpenAPIType.INTEGER),
                "message": Schema(type=OpenAPIType.STRING),
                "data": _ANY,
            },
        ),
    },
    description='exactly one of "result" or "error"',
)
