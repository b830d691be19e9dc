"""Text a model controls cannot drive the operator's terminal or break the CLI's rendering (issue 11, finding 5)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cortexbox.orchestrator.terminal import safe_text, untrusted

#: What a red-team model wrote into its log, error and model_id: set the title, write the clipboard (OSC 52),
#: clear the screen, go home, overwrite the line with a forged score, 8-bit CSI/OSC, a bidi override, rich markup.
HOSTILE = ("evil\x1b]0;pwned title\x07\x1b]52;c;ZXZpbA==\x1b\\\x1b[2J\x1b[H\r\x1b[Kscore 0.9999 [/] [bold red]x[/]"
           "\x9b31mred\x9d0;t\x9c\u202eruneve\x1bc\x07\x08\x7f\ud800 end")
#: No escape sequence, control character (but newline and tab), bidi override or surrogate survives.
FORBIDDEN = ["\x1b", "\x07", "\x08", "\r", "\x7f", "\x9b", "\x9d", "\x9c", "\u202e", "\ud800"]


def assert_inert(text: str) -> None:
    for ch in FORBIDDEN:
        assert ch not in text, f"{ch!r} reached the terminal: {text!r}"


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]0;pwned\x07title", "title"),  # OSC ended by BEL
    ("\x1b]52;c;ZXZpbA==\x1b\\clip", "clip"),  # OSC 52 (clipboard) ended by ST
    ("\x1b[2J\x1b[Hclear", "clear"),  # CSI
    ("real 0.1\r\x1b[Kforged 0.9", "real 0.1forged 0.9"),  # carriage return + erase line cannot overwrite
    ("\x9b31mred\x9d0;t\x9cz", "redz"),  # 8-bit CSI and OSC
    ("\x1bP1$qm\x1b\\dcs", "dcs"),  # DCS
    ("\x1bc\x1b(Bx", "x"),  # reset, charset
    ("half \x1b[31", "half "),  # an unterminated sequence at the end
    ("bidi\u202eevil\u2066x", "bidievilx"),  # bidi override and isolate
    ("lone\ud800surrogate", "lonesurrogate"),  # cannot be encoded: would crash the print
    ("ünïcode ✓ 日本語 🧠", "ünïcode ✓ 日本語 🧠"),  # printable unicode is kept
    ("[/] [bold]markup[/bold]", "[/] [bold]markup[/bold]"),  # markup is text; untrusted() never parses it
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    (None, ""),
    (0.25, "0.25"),
])
def test_safe_text_removes_sequences_and_controls(raw, shown):
    assert safe_text(raw) == shown


def test_safe_text_of_the_red_team_string_is_inert():
    shown = safe_text(HOSTILE)
    assert_inert(shown)
    assert shown.startswith("evil") and shown.endswith(" end") and "score 0.9999 [/]" in shown


def test_oneline_and_limits():
    assert safe_text("a\n\nb\tc\n", oneline=True) == "a b c"
    assert safe_text("x" * 10, limit=5) == "xxxx…"
    assert safe_text("a" * 9 + "z", limit=5, keep="end") == "…aaaz"
    assert safe_text("short", limit=5) == "short"
    big = "A\x1b[31m" * 5_000_000  # 45 MB: bounded work, bounded output
    shown = safe_text(big, limit=100)
    assert len(shown) <= 100 and set(shown) <= {"A", "…"}
    with pytest.raises(ValueError):
        safe_text("x", keep="middle")


def test_untrusted_is_never_read_as_markup():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    console.print(untrusted(HOSTILE, "bold", oneline=True))  # a str with "[/]" would raise MarkupError here
    printed = buffer.getvalue()
    assert_inert(printed)
    assert "[/] [bold red]x[/]" in printed


def test_progress_display_shows_stage_texts_and_labels_inert(monkeypatch):
    """Stage texts and progress labels carry a model's layer and output names (`selection: <layer> scored ...`)."""
    from cortexbox.orchestrator import cli

    buffer = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buffer, force_terminal=False, width=300))
    hostile = HOSTILE.replace("\ud800", "")
    with cli._progress(enabled=True) as progress:
        events = cli._ProgressEvents(progress)
        events("stage", {"text": f"selection: {hostile} scored 0.5"})
        events("progress", {"label": hostile, "done": 1, "total": 2})
    printed = buffer.getvalue()
    assert_inert(printed)
    assert "selection: evil" in printed and "[/] [bold red]x[/]" in printed
