"""How long the dashboard takes to show a 1,000-step execution, in headless Chromium.

The database is ``tests/ui_data.py``'s (a finished 1,000-step execution: 10 layers of
100, 1,800 edges, mixed statuses). The app is served on a free localhost port by
Werkzeug's threaded server, as ``runfox ui`` does. Each sample loads the execution's
page in a fresh document; the page sets ``data-ready`` on <body> (milliseconds since
navigation start) once the header, the SVG graph (1,000 nodes, layered layout), the
first page of the step table and the history are drawn and the next frame painted.
Reported: the median of ``--repeat`` samples (after one warm-up load), and the
executions list page for comparison.

    python benchmarks/bench_ui.py [--repeat 5]

Needs /usr/bin/chromium, /usr/bin/chromedriver and selenium (the dev extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import ui_data  # the dataset and the browser helpers of the browser test
from werkzeug.serving import make_server

from runfox.cli.commands import close_backend, open_backend
from runfox.ui import create_app


def sample(driver: object, url: str, view: str) -> float:
    driver.get("about:blank")  # type: ignore[attr-defined]
    driver.get(url)  # type: ignore[attr-defined]
    return ui_data.wait_for_view(driver, view, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    missing = ui_data.chromium_missing()
    if missing:
        print(f"bench_ui: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ui.db"
        data = ui_data.build(url)
        backend = open_backend(url)
        server = make_server("127.0.0.1", 0, create_app(backend), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}/"
        driver = ui_data.start_chromium(f"{tmp}/profile")
        try:
            pages = {"execution (1,000 steps)": (f"{base}#/execution/{quote(data.big, safe='')}",
                                                 "execution"),
                     "executions list": (base, "executions")}
            print(f"{'page':<24} {'median ms':>10} {'min':>8} {'max':>8}  (n={args.repeat})")
            for name, (page, view) in pages.items():
                sample(driver, page, view)  # warm-up: Chromium's caches, SQLite's pages
                times = [sample(driver, page, view) for _ in range(args.repeat)]
                print(f"{name:<24} {statistics.median(times):>10.0f} {min(times):>8.0f} "
                      f"{max(times):>8.0f}")
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
            close_backend(backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
