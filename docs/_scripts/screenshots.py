"""Render pages of a built site with headless Chromium, to look at them.

Builds nothing: build the site first, then point this at it::

    mkdocs build --strict --site-dir /tmp/site
    python docs/_scripts/screenshots.py /tmp/site /tmp/shots

It serves the site directory over HTTP (a thread, a free port on 127.0.0.1), renders the home
page, an API page and an executed tutorial in light and dark mode, and writes one PNG per page
and scheme to the output directory. Pass other pages as extra arguments (paths relative to the
site root, e.g. ``api/tree/``). Needs Debian's ``chromium`` (or ``CHROMIUM=/path/to/chrome``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PAGES = ["", "api/layers-basic/", "tutorials/01_quickstart/"]


# Material keeps the palette chosen with its toggle in localStorage ("<site root>.__palette",
# read by a script at the top of <body>); headless Chromium ignores prefers-color-scheme
# switches, so for "?scheme=dark" the server stores that choice before that script runs.
_DARK = (
    '<script>localStorage.setItem("/.__palette", JSON.stringify({"index": 1, "color": '
    '{"media": "(prefers-color-scheme: dark)", "scheme": "slate", "primary": "deep-orange", '
    '"accent": "deep-orange"}}));</script>'
)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site quietly; ``?scheme=dark`` pages come with the dark palette chosen."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        path, _, query = self.path.partition("?")
        file = Path(self.translate_path(path))
        if file.is_dir():
            file = file / "index.html"
        if query != "scheme=dark" or not file.is_file():
            return super().send_head()
        body = file.read_bytes().replace(b"</head>", _DARK.encode() + b"</head>", 1)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def _chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    sys.exit("no chromium found: apt-get install chromium, or set CHROMIUM=")


def shoot(
    site: Path, out: Path, pages: list[str], width: int = 1280, height: int = 2000
) -> list[Path]:
    """Serve ``site`` and write a PNG of each page in ``pages``, light and dark, to ``out``."""
    missing = [p for p in pages if not (site / p / "index.html").is_file()]
    if missing:
        sys.exit(f"not in {site}: {missing} (build the site first)")
    out.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_Handler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    written = []
    try:
        for page in pages:
            for scheme in ("light", "dark"):
                with tempfile.TemporaryDirectory() as profile:  # a fresh localStorage
                    name = (page.strip("/").replace("/", "_") or "home") + f"_{scheme}.png"
                    target = out / name
                    url = f"http://127.0.0.1:{port}/{page}?scheme={scheme}"
                    cmd = [
                        _chromium(),
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        f"--user-data-dir={profile}",
                        "--virtual-time-budget=5000",
                        f"--window-size={width},{height}",
                        f"--screenshot={target}",
                        url,
                    ]
                    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                    if not target.is_file():
                        sys.exit(f"chromium wrote no screenshot for {url}")
                    written.append(target)
                    print(f"{url} -> {target}")
    finally:
        server.shutdown()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="a built site directory (mkdocs build --site-dir)")
    parser.add_argument("out", type=Path, help="where to write the PNGs")
    parser.add_argument("pages", nargs="*", default=PAGES, help="pages relative to the site root")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    shoot(args.site, args.out, args.pages, args.width, args.height)


if __name__ == "__main__":
    main()
