"""The index page, the learning demos (``/basics/``, ``/bidi/``) and the all-in-one server."""

from .app import create_app

__all__ = ["create_app"]
