"""Screenshot a page of the built book in headless Chromium, optionally after moving widgets.

Serves the site folder on 127.0.0.1 (the widget scripts are ``crossorigin``, so ``file://``
does not work), drives Debian's Chromium with playwright-core (``book/package.json``
devDependency; ``npm ci`` in book/) through ``shoot.mjs``, blocks and reports every request
that leaves the local server, and prints a JSON report. Exit status 1 when the page tried to
reach the network or raised a JavaScript error (``--allow-errors`` to only report).

Examples::

    python book/tools/screenshot.py book/_build/default/_build/html chapters/02_data.html \\
        /tmp/ch2.png
    python book/tools/screenshot.py SITE chapters/07_alignment.html /tmp/after.png \\
        --scroll ".s3d-frames" --press ".s3d-frames input[type=range]" ArrowRight 3 \\
        --text ".s3d-frames-label" --shot /tmp/before.png

Actions run in the order given; ``--shot PATH`` takes an intermediate screenshot.
Needs ``apt-get install -y chromium`` (or ``--browser PATH``) and node on PATH.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        pass


class _Action(argparse.Action):
    """Append ``{"kind": option, ...}`` to ``namespace.actions`` so the order is kept."""

    def __init__(self, option_strings, dest, fields: tuple[str, ...] = (), **kwargs):
        self.fields = fields
        super().__init__(option_strings, dest="actions", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        values = values if isinstance(values, list) else [values]
        action = {"kind": self.const}
        action.update(zip(self.fields, values, strict=False))
        if self.const == "press":
            action["times"] = int(values[2]) if len(values) > 2 else 1
        actions = list(getattr(namespace, "actions", None) or [])
        namespace.actions = actions + [action]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("site", type=Path, help="the built site folder (…/_build/html)")
    p.add_argument("page", help="page path inside the site, e.g. chapters/02_data.html")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2000)
    p.add_argument("--full-page", action="store_true", help="capture the whole page height")
    p.add_argument("--wait-ms", type=int, default=1500, help="settle time after loading")
    p.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--allow-errors", action="store_true", help="exit 0 despite errors")
    p.add_argument("--press", nargs="+", metavar=("SELECTOR", "KEY"), action=_Action,
                   const="press", fields=("selector", "key"),
                   help="focus SELECTOR and press KEY [N times]")
    p.add_argument("--set", nargs=2, metavar=("SELECTOR", "VALUE"), action=_Action, const="set",
                   fields=("selector", "value"), help="set a range input and fire 'input'")
    p.add_argument("--click", metavar="SELECTOR", action=_Action, const="click",
                   fields=("selector",))
    p.add_argument("--scroll", metavar="SELECTOR", action=_Action, const="scroll",
                   fields=("selector",), help="scroll SELECTOR into view")
    p.add_argument("--wait", metavar="MS", action=_Action, const="wait", fields=("ms",))
    p.add_argument("--text", metavar="SELECTOR", action=_Action, const="text",
                   fields=("selector",), help="report the inner text of SELECTOR")
    p.add_argument("--shot", metavar="PATH", action=_Action, const="shot", fields=("path",),
                   help="intermediate screenshot")
    p.add_argument("--element-shot", nargs=2, metavar=("SELECTOR", "PATH"), action=_Action,
                   const="element-shot", fields=("selector", "path"),
                   help="screenshot of one element")
    args = p.parse_args(argv)
    if getattr(args, "actions", None) is None:
        args.actions = []
    for a in args.actions:
        if a["kind"] == "press" and "key" not in a:
            p.error("--press needs SELECTOR KEY [N]")
    return args


def serve(site: Path) -> tuple[ThreadingHTTPServer, str]:
    """A background HTTP server for ``site`` on a free port of 127.0.0.1, and its base URL."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def shoot(args: argparse.Namespace) -> dict:
    """Run ``shoot.mjs`` against the served page; returns its report."""
    if not (args.site / args.page).is_file():
        raise SystemExit(f"{args.site / args.page}: no such page")
    if not Path(args.browser).is_file():
        raise SystemExit(f"{args.browser}: no Chromium (apt-get install -y chromium)")
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH")
    server, base = serve(args.site)
    try:
        cfg = {
            "url": base + args.page, "out": str(args.out.resolve()), "width": args.width,
            "height": args.height, "fullPage": args.full_page, "waitMs": args.wait_ms,
            "executablePath": args.browser, "actions": args.actions,
        }
        proc = subprocess.run([node, str(HERE / "shoot.mjs"), json.dumps(cfg)], cwd=HERE,
                              capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    if proc.returncode != 0:
        raise SystemExit(f"shoot.mjs failed (exit {proc.returncode}); is playwright-core "
                         f"installed (npm ci in book/)?\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = shoot(args)
    print(json.dumps(report, indent=1))
    bad = report["external"] or report["page_errors"]
    print(f"screenshot: {args.out}", file=sys.stderr)
    return 1 if bad and not args.allow_errors else 0


if __name__ == "__main__":
    sys.exit(main())
