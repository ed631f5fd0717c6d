"""``python -m orchy.worker TARGET`` and the ``orchy-worker`` command: run a Worker.

The light install (``orchy-client``) has no ``orchy`` command (that one needs the server's
CLI); this entry point takes the same arguments as ``orchy worker``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from orchy.credentials import Credentials
from orchy.worker.cli import run_worker_command


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``TARGET [--server URL] [--concurrency N] [--token T] [--ca-bundle PEM]
    [--client-cert PEM] [--client-key PEM]`` and run the Worker it names."""
    parser = argparse.ArgumentParser(
        prog="orchy-worker",
        description="Run the user actions of a Worker until SIGINT/SIGTERM.",
    )
    parser.add_argument("target", help="A file (workflows/x.py) or module:attr.")
    parser.add_argument("--server", default=None, help="The server's URL.")
    parser.add_argument("--concurrency", type=int, default=None, help="Tasks in hand at once.")
    parser.add_argument("--token", default=None, help="Bearer token (default: ORCHY_TOKEN).")
    parser.add_argument(
        "--ca-bundle", default=None, help="CA of the server's certificate (ORCHY_CA_BUNDLE)."
    )
    parser.add_argument(
        "--client-cert", default=None, help="Client certificate, PEM (ORCHY_CLIENT_CERT)."
    )
    parser.add_argument(
        "--client-key", default=None, help="The client certificate's key (ORCHY_CLIENT_KEY)."
    )
    args = parser.parse_args(argv)
    server = args.server.rstrip("/") if args.server else None
    credentials = Credentials(args.token, args.ca_bundle, args.client_cert, args.client_key)
    run_worker_command(args.target, server, args.concurrency, credentials)


if __name__ == "__main__":
    main()
