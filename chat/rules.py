"""Input rules: what a display name, room name, message text, client id and emoji may be.

Pure functions that return the normalised value or raise ``RuleError`` naming the rule, which
the API turns into a 422. Mentions are parsed here too, so server and rules agree on what
``@name`` means.
"""

from __future__ import annotations

import re
import unicodedata

from .lookalike import format_chars, strip_invisible

__all__ = [
    "RuleError",
    "check_client_msg_id",
    "check_emoji",
    "check_file_name",
    "check_room_name",
    "check_text",
    "check_user_name",
    "mentions",
]

# Letters of any script, digits, "_", "." and "-"; no spaces, so that "@name" is unambiguous.
# Must start and end with a letter or digit, so "hi @bob." mentions "bob".
_NAME_BODY = r"\w(?:[\w.\-]*\w)?"
_USER_NAME = re.compile(rf"^{_NAME_BODY}$")
_MENTION = re.compile(rf"(?<![\w@])@({_NAME_BODY})")
# Rooms are URL path segments and channel-like slugs.
_ROOM_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_\-]*[a-z0-9])?$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMOJI_FORMAT = re.compile("[\u200d\U000e0020-\U000e007f]")


class RuleError(ValueError):
    """Input that breaks a rule; the message names the rule (the API answers 422 with it)."""


def check_user_name(value: str, max_len: int = 24) -> str:
    """NFKC-normalised (fullwidth or styled letters become plain ones: issue 14.9), trimmed."""
    name = unicodedata.normalize("NFKC", value).strip()
    hidden = format_chars(name)
    if hidden:
        raise RuleError(
            "a name must not contain invisible or direction-changing characters "
            f"(found {', '.join(dict.fromkeys(hidden))})"
        )
    if not 1 <= len(name) <= max_len or not _USER_NAME.match(name):
        raise RuleError(
            f"a name is 1-{max_len} characters: letters, digits, '_', '.' or '-', "
            "starting and ending with a letter or digit (no spaces)"
        )
    return name


def check_room_name(value: str, max_len: int = 32) -> str:
    name = value.strip()
    if not 1 <= len(name) <= max_len or not _ROOM_NAME.match(name):
        raise RuleError(
            f"a room name is 1-{max_len} characters: lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return name


def check_text(value: str, max_len: int = 4000) -> str:
    """Trimmed text of 1..max_len characters; CRLF and CR become LF; bidi embeddings,
    overrides, isolates and zero-width spaces are dropped (issue 14.9: they reorder or hide
    what is shown, and nothing a person types needs them)."""
    text = strip_invisible(value).replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise RuleError("text must not be empty (after trimming whitespace)")
    if len(text) > max_len:
        raise RuleError(f"text must be at most {max_len} characters (after trimming); got {len(text)}")
    return text


def check_client_msg_id(value: str) -> str:
    if not _CLIENT_ID.match(value):
        raise RuleError("client_msg_id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return value


def check_emoji(value: str) -> str:
    """Any short non-ASCII symbol sequence: emoji with skin tones and ZWJ sequences fit in 16."""
    emoji = value.strip()
    if not 1 <= len(emoji) <= 16 or any(ord(c) < 128 or c.isspace() for c in emoji):
        raise RuleError("emoji must be 1-16 characters of emoji (no letters, digits or spaces)")
    # Emoji sequences need the zero-width joiner and tag characters (flags of regions); no
    # other format character (bidi controls, zero-width spaces) belongs in one.
    hidden = [c for c in emoji if unicodedata.category(c) == "Cf" and not _EMOJI_FORMAT.match(c)]
    if hidden:
        found = ", ".join(dict.fromkeys(format_chars("".join(hidden))))
        raise RuleError(f"emoji must not contain invisible or direction-changing characters (found {found})")
    return emoji


def check_file_name(value: str | None) -> str:
    """A display/download name: last path component, no control characters, at most 200 chars."""
    name = (value or "").replace("\\", "/").rsplit("/", 1)[-1]
    # Format characters too: U+202E makes "gpj.exe" show as "exe.jpg" (issue 14.9).
    name = "".join(c for c in _CONTROL.sub("", name) if unicodedata.category(c) != "Cf")
    name = name.strip().strip(".") or "file"
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:190] + dot + ext[:9]) if dot and len(ext) <= 9 else name[:200]
    return name


def mentions(text: str) -> list[str]:
    """Names mentioned as ``@name`` in ``text``, in order, each once (case kept as written)."""
    seen: dict[str, str] = {}
    for match in _MENTION.finditer(text):
        seen.setdefault(match.group(1).casefold(), match.group(1))
    return list(seen.values())
