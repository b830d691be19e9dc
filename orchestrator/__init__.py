"""Container lifecycle, the run loop and the `cortexbox` CLI."""
