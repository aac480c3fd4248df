"""Untrusted text made safe for a terminal or an image label.

Class names come from a model file's metadata and file names from the user's disk; either may hold
escape sequences (``ESC [2J`` clears a screen), carriage returns or newlines (a fake error line), or
bidirectional overrides (text that reads differently than it is). :func:`safe_text` is the one place
that neutralises them; both command lines and the drawing code call it on every such string.
"""

from __future__ import annotations

import unicodedata

#: Format characters that reorder or hide text (bidi embeddings, overrides, isolates, marks).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI_CONTROLS


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: object) -> str:
    """``str(text)`` with every control character escaped: ``"a\\x1b[2Jb\\n"`` -> ``"a\\\\x1b[2Jb\\\\x0a"``.

    Escaped are the C0/C1 controls and DEL (category ``Cc``: escape, newline, carriage return, tab,
    backspace, ...), the Unicode line/paragraph separators, the bidirectional controls and lone
    surrogates (undecodable bytes of a file name, which a UTF-8 terminal cannot print), written
    as ``\\xNN`` / ``\\uNNNN``; a literal backslash is left alone. Ordinary Unicode (accents, CJK,
    emoji) is kept, so the result is one printable line.
    """
    return "".join(_escape(char) if _unsafe(char) else char for char in str(text))
