"""
A build that meets a misbehaving server, and a resume after a kill
===================================================================

Collection portals fail in every way a web server can: a record's image has been
withdrawn (404, 410), the server is overloaded for a moment (503, 429 with
``Retry-After``), a connection is reset halfway, a portal answers with an HTML error
page in place of the JPEG, a transfer stops short, a redirect points back to
itself, a request never gets an answer. Over millions of records each of these
happens thousands of times. A build with idigdask never stops for one of them: a
transient failure is retried with backoff, a permanent one becomes a ledger row with
a reason, and the ledger accounts for every row of the catalog.

Builds of millions of images also get killed: a batch job reaches its walltime, a
laptop lid closes. The second half of this example kills a build in the middle and
resumes it.
"""

# %%
# A server that fails on purpose
# ------------------------------
# :class:`~idigdask.testing.media_server.MediaServer` serves a folder on 127.0.0.1
# and, under ``/fault/...``, routes that misbehave in chosen ways (see the module
# :mod:`idigdask.testing.media_server`). We make eight synthetic sheets and write a
# URL table whose rows go through one route each.
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import idigdask
from idigdask.testing.media_server import MediaServer

tmp = Path(tempfile.mkdtemp(prefix="idigdask-faults-"))
(tmp / "sheets").mkdir()
server = MediaServer(tmp / "sheets")
sheets = idigdask.make_sheets(tmp / "sheets", n=32, size=(300, 450), seed=3)
names = [f"images/{Path(p).name}" for p in sheets.paths]

routes = {
    "a plain file": names[0],
    "503 twice, then the file": f"fault/fail/503/2/{names[1]}",
    "429 with Retry-After: 1": f"fault/throttle/1/{names[2]}?after=1",
    "two redirects": f"fault/chain/2/{names[3]}",
    "slow: 0.5 s to answer": f"fault/slow/0.5/{names[4]}",
    "reset halfway, once": f"fault/reset/1/{names[5]}",
    "404 Not Found": "fault/status/404/gone.jpg",
    "410 Gone": "fault/status/410/withdrawn.jpg",
    "500, always": f"fault/fail/500/always/{names[6]}",
    "an HTML page": "fault/html/portal.jpg",
    "cut short": f"fault/short/{names[7]}",
    "redirect loop": "fault/loop/sheet.jpg",
    "never answers": "fault/hang/sheet.jpg",
    "100 MB": "fault/huge/100000000",
}
urls = pd.DataFrame({"url": [server.url_for(r) for r in routes.values()],
                     "what": list(routes)})
urls.to_csv(tmp / "faulty.csv", index=False)
print(urls.assign(url=urls["url"].str.replace(server.url, "")).to_string(index=False))

# %%
# The build
# ---------
# A try may take 1 s (``timeout``), a transient failure is tried twice more
# (``retries``), the first pause is about 0.2 s and doubles (``backoff``), and no
# body over 4 MiB is accepted (``max_bytes``). These are
# :class:`~idigdask.fetch.FetchOptions` fields, given to
# :func:`idigdask.build_dataset` as keywords; their defaults (30 s, 4 retries, 64
# MiB) live in dask's configuration. The server is on 127.0.0.1, which a build
# refuses to read unless told (``allow_private=True``), so that a catalog from a
# stranger cannot make the workers read their own network.
result = idigdask.build_dataset(str(tmp / "faulty.csv"), str(tmp / "faulty.zarr"), size=64,
                                timeout=1, retries=2, backoff=0.2, max_bytes=4 * 2**20,
                                allow_private=True, progress=False)
print(result.counts["status"])

# %%
# Every row of the catalog has its row in the ledger, in catalog order. Transient
# failures ended ``ok`` after a second or third try (``attempts``); the others say
# why they failed, and ``message`` says it in words.
ledger = idigdask.read_ledger(str(tmp / "faulty.zarr"))
ledger["what"] = list(routes)
pd.set_option("display.max_colwidth", 70)
print(ledger[["what", "status", "reason", "attempts", "seconds"]].to_string(index=False))
print()
for what, message in ledger.loc[ledger["status"] == "failed", ["what", "message"]].values[:4]:
    print(f"{what}: {message.replace(server.url, '')}")

# %%
# What the server saw: the requests each route received. Retries of transient
# failures are bounded, redirects are followed hop by hop (a loop is cut after
# ``max_redirects``), and permanent failures (404, 410) are asked once.
seen = server.requests  # request path -> requests received


def requests_for(route: str) -> int:
    path = "/" + route.split("?")[0]
    if route.startswith("fault/chain/"):  # the hops are /fault/chain/2/..., /1/..., /0/...
        tail = path.split("/", 4)[4]
        return sum(n for p, n in seen.items() if p.startswith("/fault/chain/") and p.endswith(tail))
    return seen.get(path, 0)


per_route = [requests_for(r) for r in routes.values()]
fig, ax = plt.subplots(figsize=(7, 4))
colour = ledger["status"].map({"ok": "tab:green", "failed": "tab:red"})
ax.barh(list(routes), per_route, color=colour)
for y, (n, reason) in enumerate(zip(per_route, ledger["reason"].fillna("ok"))):
    ax.text(n, y, f" {reason}", va="center", fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("requests the server received")
ax.set_xlim(0, max(per_route) * 1.5)
ax.set_title("One row per catalog row: green ok, red failed (with its reason)")
fig.tight_layout()

# %%
# Without ``allow_private`` the same catalog gives no image at all: every row fails
# with ``private_address`` before a single request leaves the machine.
refused = idigdask.build_dataset(str(tmp / "faulty.csv"), str(tmp / "refused.zarr"),
                                 size=64, allow_private=False, progress=False)
print(refused.counts["reasons"])
print(idigdask.read_ledger(str(tmp / "refused.zarr"))["message"][0].replace(server.url, ""))

# %%
# A kill, and a resume
# --------------------
# A build commits its work in *waves*: a wave's images are written, then its ledger
# rows, flushed to disk; only then does the wave count. Here 24 sheets are served
# slowly (0.25 s a request) and the build runs in another process, four rows a wave
# (``batch_size=4, wave_batches=1``), so that we can kill it with ``SIGKILL`` (what a
# batch system's walltime does) right after its second wave is committed.
slow = pd.DataFrame({"url": [server.url_for(f"fault/slow/0.25/{n}") for n in names[8:]]})
slow.to_csv(tmp / "slow.csv", index=False)
store = str(tmp / "killed.zarr")
options = dict(size=64, batch_size=4, wave_batches=1, allow_private=True, progress=False)
script = tmp / "build.py"
script.write_text(textwrap.dedent(f"""
    import idigdask
    idigdask.build_dataset({str(tmp / "slow.csv")!r}, {store!r}, **{options!r})
"""))
child = subprocess.Popen([sys.executable, str(script)])
while child.poll() is None:
    try:
        if len(idigdask.read_ledger(store)) >= 8:
            break
    except Exception:  # the store is not there yet, or not whole yet
        pass
    time.sleep(0.05)
child.send_signal(signal.SIGKILL)
child.wait()
print("the build process ended with", child.returncode)

# %%
# What the killed build left: a ledger of the committed waves, and possibly images
# of a wave that was being written when the process died. Those images belong to no
# committed ledger row; the next build cuts them off.
killed = idigdask.read_ledger(store)
print(f"ledger rows: {len(killed)} of {len(slow)}, {killed['status'].value_counts().to_dict()}")
print("images in the array:", idigdask.open_dataset(store).sizes["image"])

# %%
# The resume is the same call on the same store. Rows already ``ok`` (keyed by their
# media uuid and URL, not by their position) are not fetched again: the server is
# asked only for the others.
server.reset_stats()
resumed = idigdask.build_dataset(str(tmp / "slow.csv"), store, **options)
print(f"fetched {sum(server.requests.values())} images, {resumed.counts['status']}")
after = idigdask.read_ledger(store)
print(after.groupby("run").size().rename("ledger rows committed by run").to_string())

# %%
# The resumed store is the store an uninterrupted build writes: the same pixels, in
# the same order, and the same ledger.
whole = str(tmp / "whole.zarr")
idigdask.build_dataset(str(tmp / "slow.csv"), whole, **options)
a, b = idigdask.open_dataset(store), idigdask.open_dataset(whole)
print("same images:", np.array_equal(a["images"].values, b["images"].values))
print("same media, in order:", list(a["media_uuid"].values) == list(b["media_uuid"].values))
columns = ["row_key", "status", "reason", "image_index", "catalog_row", "sha256"]
print("same ledger:", after[columns].equals(idigdask.read_ledger(whole)[columns]))

# %%
fig, ax = plt.subplots(figsize=(7, 1.8))
runs = after["run"].to_numpy()
ax.bar(after["catalog_row"], 1, width=1, color=np.where(runs == 0, "tab:blue", "tab:orange"),
       edgecolor="white")
ax.set_yticks([])
ax.set_xlabel("catalog row")
ax.set_title("Who committed each row: the killed build (blue), the resume (orange)")
fig.tight_layout()

# %%
# Tidy up.
for ds in (a, b):
    ds.close()
server.close()
shutil.rmtree(tmp)
