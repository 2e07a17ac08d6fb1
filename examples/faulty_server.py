"""A build against a server that fails the way real media servers do.

Serves a few synthetic sheets from a loopback server whose fault routes answer 503,
429, 404, HTML pages and truncated bodies, builds a store from them and prints the
ledger: every row is accounted for, transient failures end ``ok`` after retries.

Run: ``python examples/faulty_server.py``
"""

import tempfile
from pathlib import Path

import pandas as pd

import idigdask
from idigdask.testing.media_server import MediaServer


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sheets = idigdask.make_sheets(tmp / "sheets", n=4, size=(600, 900))
        names = [f"images/{p.name}" for p in sorted((tmp / "sheets/images").glob("*.jpg"))]
        with MediaServer(tmp / "sheets") as server:
            urls = [server.url_for(names[0]),
                    server.url_for(f"fault/fail/503/2/{names[1]}"),      # ok after retries
                    server.url_for(f"fault/throttle/1/{names[2]}?after=1"),  # 429 Retry-After
                    server.url_for("fault/status/404/gone.jpg"),        # failed: http_404
                    server.url_for("fault/html/portal.jpg"),            # failed: not_an_image
                    server.url_for(f"fault/short/{names[3]}")]          # failed: truncated
            pd.DataFrame({"url": urls}).to_csv(tmp / "urls.csv", index=False)
            result = idigdask.build_dataset(str(tmp / "urls.csv"), str(tmp / "s.zarr"),
                                            size=64, timeout=5,
                                            allow_private=True)  # the server is on 127.0.0.1
        ledger = idigdask.read_ledger(str(tmp / "s.zarr"))
        print(ledger[["access_uri", "status", "reason", "attempts"]].to_string())
        print(result.counts)
        del sheets


if __name__ == "__main__":
    main()
