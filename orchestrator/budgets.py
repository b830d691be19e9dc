"""Budgets on everything a model controls on the wire, stated in one place.

A model is a stranger's code: every quantity it decides (bytes it sends, messages, silence,
strings) is bounded here, and the client (orchestrator/client.py) enforces each bound where
the model's message arrives, before anything is allocated for it. The container's own limits
(memory, CPUs, pids, tmpfs) are `runtime.SandboxLimits`. Every field can be set from the
environment (``$CORTEXBOX_WIRE="stall_timeout_s=30,output_bytes_per_run=2g"``), and each
scored run records the budgets it ran under in its provenance (``wire_budgets``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from cortexbox.benchmarks.settings import Settings
from cortexbox.orchestrator.errors import UserError

ENV_WIRE = "CORTEXBOX_WIRE"


@dataclass(frozen=True)
class WireBudgets:
    """What one run of a model may cost the orchestrator. Defaults fit a 2-core, 24 GiB host."""

    #: Bytes the model may send for one run, counted at the dtype it sends (float64: 8 per
    #: value; strings at their worst case), summed over the requested outputs.
    output_bytes_per_run: int = 8 * 1024**3
    #: The same, for one stimulus.
    output_bytes_per_stimulus: int = 512 * 1024**2
    #: Memory the orchestrator holds for one run's results (float32: 4 bytes per value).
    result_bytes_per_run: int = 4 * 1024**3
    #: Messages that carry no new valid bytes (headers, progress, a chunk under
    #: `min_chunk_bytes` that does not end its tensor): this many, plus
    #: `idle_messages_per_output` per stimulus and requested output. A model that goes over
    #: is flooding: protocol_violation.
    idle_messages: int = 1000
    idle_messages_per_output: int = 4
    #: A chunk smaller than this (unless it ends its tensor) counts as carrying nothing; also
    #: the smallest max_chunk_bytes a model may declare, so the count of chunks is bounded by bytes.
    min_chunk_bytes: int = 1024
    #: No new valid bytes for this long ends the run as a timeout (besides the whole-run deadline).
    stall_timeout_s: float = 120.0
    #: Once this share of the run's deadline has passed, a run whose rate so far would need
    #: more than `overrun_factor` times its deadline is stopped as a timeout at once, instead of
    #: when the deadline comes.
    overrun_check_after: float = 0.25
    overrun_factor: float = 1.2
    #: Strings the model controls. Identifiers (model_id, model_version) and names (outputs,
    #: regions, metadata keys) over these lengths, or with control characters, are refused;
    #: free text (description, metadata values, error details) is cut to its length and its
    #: control characters replaced.
    id_chars: int = 128
    name_chars: int = 512
    description_chars: int = 4000
    metadata_entries: int = 64
    metadata_value_chars: int = 1000
    error_chars: int = 2000
    #: The shared-memory area a run offers a model that lists "transport.shared_memory" (a sealed
    #: memfd, one per client; its pages count toward the memory of whoever first writes them, the
    #: container). Each tensor up to its size minus the 4 KiB control page travels through it instead
    #: of the stream. 0 turns the path off: every tensor is chunked over gRPC.
    shared_memory_bytes: int = 256 * 1024**2

    #: Fields for which 0 means "off" rather than a mistake.
    ZERO_MEANS_OFF = ("shared_memory_bytes",)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "WireBudgets":
        """The defaults with ``$CORTEXBOX_WIRE`` applied: "key=value,..." (sizes may say k, m, g),
        the same form as runtime's ``$CORTEXBOX_SANDBOX``."""
        return cls(**parse(Settings.from_env(environ).wire))

    def to_dict(self) -> dict:
        return asdict(self)


def parse(text: str, cls: type = WireBudgets, *, variable: str = ENV_WIRE,
          example: str = "stall_timeout_s=30,output_bytes_per_run=2g",
          strings: dict[str, Callable[[str], str]] | None = None) -> dict:
    """Fields of the budget dataclass `cls` from "key=value,..." (one parser for ``$CORTEXBOX_WIRE`` and
    runtime's ``$CORTEXBOX_SANDBOX``): sizes (keys naming bytes) may say k, m, g; numbers must be positive;
    string fields go through their validator in `strings`. UserError names the first bad item."""
    names = {f.name: f for f in fields(cls)}
    strings = strings or {}
    values: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = (x.strip() for x in item.partition("="))
        if not sep or key not in names:
            raise UserError(f"${variable}: unknown budget {item!r}", f"use key=value with keys {', '.join(names)}")
        if key in strings:
            values[key] = strings[key](raw)
            continue
        try:
            value = parse_size(raw) if "bytes" in key else (float if names[key].type in ("float", float) else int)(raw)
        except ValueError:
            raise UserError(f"${variable}: {key}={raw!r} is not a number", f"e.g. {example}") from None
        if value < 0 or (value == 0 and key not in getattr(cls, "ZERO_MEANS_OFF", ())):
            raise UserError(f"${variable}: {key} must be positive")
        values[key] = value
    return values


def parse_size(text: str) -> int:
    """Bytes from ``20g``, ``1.5GiB``, ``500M``, ``64k`` or a plain number (binary units, case-insensitive): the one
    size parser of budgets, the cache's cap and the CLI's ``--memory``; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
