"""Characters that make text mean something other than it looks (issue 14.9).

- Look-alike names: ``boss``, Cyrillic ``bоss`` and fullwidth ``ｂoss`` look the same on screen.
  Names are NFKC-normalised when given (fullwidth and styled letters become plain ones), and
  :func:`skeleton` is what "the same name" means among the people online: NFKC, casefolded,
  format characters (Unicode category Cf: zero-width, bidi controls) dropped, and the Cyrillic
  and Greek letters that look like Latin ones mapped to them. A small table in the spirit of
  Unicode TR39's confusables, not all of it: it covers the letters that fool a reader at a glance.
- Bidi controls: a right-to-left override (U+202E) makes ``txt.exe`` display as ``exe.txt``, and
  the embeddings, overrides and isolates of a message leak into the text around it on screen.
  :func:`strip_invisible` drops them from message text and file names, with the zero-width
  characters that have no use in text but hiding things (the joiners ZWJ and ZWNJ stay:
  emoji sequences and several scripts need them). The page also isolates every user string
  (``unicode-bidi: isolate``), so right-to-left text never reorders what is around it.
"""

# ruff: noqa: RUF001, RUF002
from __future__ import annotations

import re
import unicodedata

__all__ = ["BIDI_CONTROLS", "format_chars", "skeleton", "strip_invisible"]

# Embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Zero-width space, word joiner, zero-width no-break space (BOM), Mongolian vowel separator.
_ZERO_WIDTH = "\u200b\u2060\ufeff\u180e"
_INVISIBLE = re.compile(f"[{BIDI_CONTROLS}{_ZERO_WIDTH}]")

# Look-alike -> the Latin letter it passes for, pair by pair (the file is about look-alikes,
# so ruff's warnings about ambiguous letters are off for it).
_LOOKALIKES = str.maketrans(
    # Cyrillic
    "авьсԁеёһніїјкӏмпорԛгѕтџуўԝх"
    # Greek
    "αβϲεηιίκνοόρτυχωγ"
    # Latin and digits that pass for other letters
    "ıɡℓ01",
    "abbcdeehhiijklmnopqrstuyywxabceniikvooptuxwyiglol",
)


def format_chars(text: str) -> list[str]:
    """The format characters (category Cf) in ``text``, as ``U+XXXX`` (for error messages)."""
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cf"]


def skeleton(name: str) -> str:
    """What two names that look alike have in common; equal skeletons mean "the same name"."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    visible = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", visible.translate(_LOOKALIKES))


def strip_invisible(text: str) -> str:
    """``text`` without bidi embeddings, overrides, isolates and zero-width spaces."""
    return _INVISIBLE.sub("", text)
