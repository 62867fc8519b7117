"""Stored or received text made safe to show on a terminal.

An answer (or a turn, a fact, a title) can hold escape sequences: a pasted log,
or a model repeating hostile input. Written to a terminal as they are, they
can retitle the window, write to the clipboard (OSC 52), move the cursor over
earlier output or hide text. Where kvchat renders text for a terminal, every
control character except tab and line end is shown as a visible stand-in, and
bidirectional overrides, which make text read backwards, are shown as such too.
Raw output (a pipe, --plain, --json) stays exactly as stored."""

from __future__ import annotations

import re

# C0 controls but tab and line feed, DEL, C1 controls, and the bidirectional
# embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _stand_in(match: re.Match) -> str:
    code = ord(match[0])
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ␛ for ESC
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{code:04X}>"


def visible(text: str) -> str:
    """`text` with every character that could act on the terminal replaced by a visible stand-in."""
    return _UNSAFE.sub(_stand_in, text)


def safe_text(value: str, **options):
    """A Rich Text of `value` made visible (see above), for a table or a listing at a terminal."""
    from rich.text import Text

    return Text(visible(value), **options)
