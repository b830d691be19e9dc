"""The leaderboard as terminal tables (``cortexbox leaderboard``, ``cortexbox demo``), drawn from the same dicts the
web renders and the JSON API returns (``orchestrator/web/data.py``), so the CLI and the web show one board.

Model names, digests and layers come from models and the registry: they are shown as untrusted text (escapes
removed, never read as markup)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cortexbox.orchestrator.terminal import untrusted
from cortexbox.orchestrator.web.data import cell_text, fmt, short

__all__ = ["benchmark_table", "board_columns", "board_table"]


def board_columns(board: dict[str, Any], leaves: bool = False) -> list[dict[str, Any]]:
    """The board's tree columns the table shows: on a domain's board its inner nodes (the web's default columns),
    on the board of all domains the roots only (a terminal is narrower than a page); with ``leaves`` every column
    the web has, benchmarks and those outside the tree (†) included."""
    if leaves:
        return board["columns"] + board["extra_columns"]
    return [c for c in board["columns"] if not c["leaf"] and (board["domain"] or c["depth"] == 0)]


def _headers(board: dict[str, Any], cols: list[dict[str, Any]]) -> list[str]:
    """Each column's name, or its path below the board's node where two shown columns share a name."""
    names = [c["name"] for c in cols]
    prefix = f"{board['root']}/" + (f"{board['domain']}/" if board["domain"] else "")
    out = []
    for c, name in zip(cols, names):
        if c.get("extra"):
            out.append(name + " †")
        elif names.count(name) > 1:
            out.append(c["path"][len(prefix):] if c["path"].startswith(prefix) else c["path"][len(board["root"]) + 1:])
        else:
            out.append(name)
    return out


def _aggregate(node: dict[str, Any], view: str) -> str:
    text = cell_text(node, view)
    iv = node["interval"] if view == "brainscore" else node["scored_interval"]
    if iv and text[:1].isdigit():
        value, _, rest = text.partition(" ")
        text = f"{value} [{fmt(iv['low'])}, {fmt(iv['high'])}]" + (f" {rest}" if rest else "")
    return text


def board_table(board: dict[str, Any], leaves: bool = False) -> Table:
    """Rank, model, the ranked aggregate with its 95% interval, coverage, a column per branch (per benchmark with
    ``leaves``), digest: the rows of ``data.leaderboard`` in its order."""
    view = board["view"]
    what = "Brain-Score view: missing counts as 0" if view == "brainscore" else "scored-only view: averages what was scored"
    table = Table(title=f"cortexbox leaderboard: {board['domain'] or board['root']} ({what})", title_justify="left")
    cols = board_columns(board, leaves)
    table.add_column("rank", justify="right")
    table.add_column("model")
    table.add_column(board["domain"] or board["root"], justify="right")
    table.add_column("coverage", justify="right")
    for header in _headers(board, cols):
        table.add_column(header, justify="right", overflow="fold")
    table.add_column("digest")
    for r in board["rows"]:
        table.add_row(
            "—" if r["rank"] is None else str(r["rank"]),
            untrusted(r["model"], oneline=True, limit=80),
            _aggregate(r["ranked_by"], view),
            f"{100 * r['ranked_by']['coverage']:.0f}%",
            *(cell_text(r["nodes"][c["path"]], view) for c in cols),
            untrusted(short(r["digest"]), oneline=True),
        )
    return table


def benchmark_table(page: dict[str, Any]) -> Table:
    """One benchmark's ranked scores on its latest version (``data.benchmark_page``)."""
    version = f"v{page['version']}" if page.get("registered", True) else "not registered yet"
    table = Table(title=f"{page['identifier']} ({version}): ceiled scores clipped to [0, 1], latest version only",
                  title_justify="left")
    for column in ("rank", "model", "ceiled", "raw ± error", "ceiling", "layer", "digest"):
        table.add_column(column, justify="right" if column in ("rank", "ceiled", "raw ± error", "ceiling") else "left")
    for r in page["scores"]:
        leaf, score = r["leaf"], r["score"] or {}
        value = fmt(leaf["value"], 4) + (" clipped" if leaf.get("clipped") else "") if leaf["status"] == "scored" else (
            leaf["status"] + (f" ({leaf['failure_class']})" if leaf.get("failure_class") else ""))
        raw = f"{fmt(score['raw'], 4)} ± {fmt(score.get('error') or 0.0, 4)}" if score.get("raw") is not None else ""
        table.add_row(
            "—" if r["rank"] is None else str(r["rank"]),
            untrusted(r["model"], oneline=True, limit=80),
            value,
            raw,
            fmt(score.get("ceiling"), 4) if score else "",
            untrusted(score.get("layer") or "", oneline=True, limit=80),
            untrusted(short(r["digest"]), oneline=True),
        )
    return table
