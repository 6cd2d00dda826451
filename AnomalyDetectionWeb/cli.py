"""``anomaly-detection web``: the teaching page, one server process per student.

Joins the engine's command line through its entry-point group (the engine never imports this
package); the top level imports nothing heavy, so ``anomaly-detection --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from AnomalyDetectionLib.catalog import DEVICES

__all__ = ["add_web"]


def cmd_web(args: argparse.Namespace) -> int:
    from AnomalyDetectionLib.catalog import resolve_model_path
    from AnomalyDetectionLib.device import resolve_device

    from .launcher import Launcher

    resolve_device(args.device)  # a missing CUDA is the engine's one-line error, before any server starts
    models = [resolve_model_path(m) for m in args.model] if args.model else None
    launcher = Launcher(host=args.host, port=args.port, max_sessions=args.max_sessions,
                        idle_timeout_s=args.idle_timeout, model_paths=models, device=args.device,
                        max_upload_mb=args.max_upload_mb)
    launcher.serve_forever()
    return 0


def add_web(sub) -> None:
    """Add the ``web`` verb to ``anomaly-detection``'s sub-commands."""
    web = sub.add_parser("web", help="the teaching web app (trame-slicer): Slicer's views, the anomaly map and "
                                     "the Segment Editor in a browser, one session per student")
    web.add_argument("--port", type=int, default=8080, help="port of the page (default 8080)")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 serves a class on the network)")
    web.add_argument("--model", nargs="+", type=Path, default=None,
                     help="model names or files to offer (default: the bundled models)")
    web.add_argument("--device", choices=DEVICES, default="auto", help="device for the models (default auto)")
    web.add_argument("--max-sessions", type=int, default=8,
                     help="most students served at once; each session is a server process (default 8)")
    web.add_argument("--idle-timeout", type=float, default=1800,
                     help="seconds a session's server lives without a connected page (default 1800)")
    web.add_argument("--max-upload-mb", type=float, default=300, help="largest upload accepted (default 300 MB)")
    web.set_defaults(func=cmd_web)
