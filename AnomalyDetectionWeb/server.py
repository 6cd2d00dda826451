"""One session's server process: ``python -m AnomalyDetectionWeb.server --port P``.

The launcher starts one per student (trame keeps one state per server process, so a process is
what keeps two students' thresholds and scenes apart). It prints ``READY <port>`` once it
listens and stops by itself after ``--idle-timeout`` seconds without a connected page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from AnomalyDetectionLib.catalog import DEVICES


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", nargs="+", type=Path, default=None)
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--idle-timeout", type=float, default=1800)
    parser.add_argument("--max-upload-mb", type=float, default=300)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from trame.app import get_server

    from .app import WebApp

    server = get_server(client_type="vue3")
    WebApp(server=server, model_paths=args.model, device=args.device, max_upload_mb=args.max_upload_mb)
    server.controller.on_server_ready.add(lambda **_: print(f"READY {args.port}", flush=True))
    server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=False,
                 timeout=int(args.idle_timeout), disable_logging=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
