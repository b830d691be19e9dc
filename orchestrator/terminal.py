"""Text a model controls, made safe to show in the operator's terminal.

A model writes its own log, error messages, ``model_id``, layer and output names and description, and the registry
keeps them; printed as they are, escape sequences in them set the window title, write the clipboard (OSC 52), clear
the screen or move the cursor over a genuine line to forge a score, and rich markup in them (``[/]``) crashes the
table they are in. :func:`safe_text` removes every escape sequence (CSI, OSC, DCS and the other strings, in their 7-
and 8-bit forms) and every control character but newline and tab (C0, DEL, C1, carriage return), the bidi overrides
that reorder what a line shows, and lone surrogates (which cannot be written at all); printable unicode is kept, and
the length is bounded. :func:`untrusted` returns the result as a rich ``Text``, which rich never parses as markup.
Everything the CLI prints from a model or from the registry goes through one of the two.
"""

from __future__ import annotations

import re

from rich.text import Text

__all__ = ["DEFAULT_LIMIT", "safe_text", "untrusted"]

#: Characters kept of one piece of untrusted text, unless the caller says otherwise.
DEFAULT_LIMIT = 2000

# An escape sequence, 7-bit (ESC ...) or 8-bit (a C1 introducer), with its parameters and terminator.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"  # CSI: parameters, intermediates, final byte
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS, SOS, PM, APC strings
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"  # every other escape (charset, keypad, reset, ...), or a lone ESC
)
# What is left after the sequences: controls but \t and \n, DEL and C1, the bidi embeddings, overrides and
# isolates, lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_BLANKS = re.compile(r"[\n\t]+")


def safe_text(text: object, *, limit: int | None = DEFAULT_LIMIT, oneline: bool = False, keep: str = "start") -> str:
    """``text`` (any object; ``None`` is ``""``) with escape sequences and control characters removed, at most
    ``limit`` characters (``None``: no bound) of it, from the start or, with ``keep="end"`` (log tails), the end;
    a cut is marked with an ellipsis. ``oneline`` turns newlines and tabs into single spaces, for table cells and
    names that must not start a line of their own."""
    if keep not in ("start", "end"):
        raise ValueError(f"keep must be 'start' or 'end', not {keep!r}")
    if text is None:
        return ""
    text = str(text)
    if limit is not None and len(text) > 4 * limit + 64:  # bound the work on a 50 MB description
        text = text[: 4 * limit + 64] if keep == "start" else text[-(4 * limit + 64):]
    text = _UNSAFE.sub("", _SEQUENCE.sub("", text.replace("\r\n", "\n")))
    if oneline:
        text = _BLANKS.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…" if keep == "start" else "…" + text[len(text) - max(limit - 1, 0):]
    return text


def untrusted(text: object, style: str = "", **options) -> Text:
    """:func:`safe_text` of ``text`` as a rich ``Text`` (never read as markup), for tables and ``Console.print``;
    ``options`` are :func:`safe_text`'s."""
    return Text(safe_text(text, **options), style=style)
