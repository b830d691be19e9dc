"""`python -m cortexbox.sdk serve module:Class [--address ADDR]`: the entry point of model images."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cortexbox.sdk.model import Model
from cortexbox.sdk.server import serve


def load_model_class(ref: str) -> type[Model]:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"expected module:Class, got {ref!r}")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise SystemExit(f"{ref} is not a cortexbox.sdk.Model subclass")
    return cls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cortexbox.sdk")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve a Model over gRPC")
    p.add_argument("model", help="module:Class of a cortexbox.sdk.Model subclass")
    p.add_argument("--address", help="unix:///path/model.sock or host:port (default: $CORTEXBOX_SOCKET)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(load_model_class(args.model)(), args.address)


if __name__ == "__main__":
    main()
