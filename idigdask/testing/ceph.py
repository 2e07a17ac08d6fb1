"""A local Ceph object store (RADOS Gateway) for tests and benchmarks.

``ci/ceph.sh start`` runs one monitor, one OSD and one RADOS Gateway on 127.0.0.1 and
prints the environment that :meth:`CephGateway.from_env` reads::

    IDIGDASK_S3_ENDPOINT=http://127.0.0.1:PORT
    AWS_ACCESS_KEY_ID=...
    AWS_SECRET_ACCESS_KEY=...
    IDIGDASK_CEPH_DIR=/tmp/idigdask-ceph

The gateway speaks the S3 API that iDigBio's storage speaks, so code under test uses it
through s3fs with :attr:`CephGateway.storage_options`, and public objects are served
over plain HTTP at ``http://127.0.0.1:PORT/<bucket>/<key>``.

s3fs is imported only inside the methods that need it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import s3fs

ENDPOINT_VAR = "IDIGDASK_S3_ENDPOINT"
KEY_VAR = "AWS_ACCESS_KEY_ID"
SECRET_VAR = "AWS_SECRET_ACCESS_KEY"
STATE_DIR_VAR = "IDIGDASK_CEPH_DIR"

#: Seconds ``ci/ceph.sh`` may take: a first ``start`` installs the Debian packages.
SCRIPT_TIMEOUT_S = 600


class CephScriptError(RuntimeError):
    """``ci/ceph.sh`` is missing or one of its commands failed."""


def ceph_script() -> Path:
    """Return the path of ``ci/ceph.sh`` in the source tree.

    Returns
    -------
    pathlib.Path
        The script, found relative to this package inside the repository.

    Raises
    ------
    CephScriptError
        When the package is installed without its repository (no ``ci/ceph.sh``).
    """
    script = Path(__file__).resolve().parents[2] / "ci" / "ceph.sh"
    if not script.is_file():
        raise CephScriptError(
            f"ci/ceph.sh not found at {script}: controlling the Ceph gateway needs the "
            "idigdask source tree, not an installed package"
        )
    return script


def run_ceph_script(command: str, state_dir: str | None = None) -> str:
    """Run ``ci/ceph.sh COMMAND`` and return its standard output.

    Parameters
    ----------
    command : str
        One of ``start``, ``stop``, ``env``, ``status``, ``stop-gateway``,
        ``start-gateway``, ``restart-gateway``.
    state_dir : str, optional
        The cluster's state folder (``IDIGDASK_CEPH_DIR``); the script's default
        when None.

    Returns
    -------
    str
        What the script printed on standard output (the ``export`` lines for
        ``start`` and ``env``).

    Raises
    ------
    CephScriptError
        When the script is missing, times out or exits non-zero; the message ends
        with the last lines the script wrote to standard error.
    """
    env = dict(os.environ)
    if state_dir:
        env[STATE_DIR_VAR] = state_dir
    try:
        done = subprocess.run(
            ["bash", str(ceph_script()), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CephScriptError(f"ci/ceph.sh {command} took over {SCRIPT_TIMEOUT_S}s") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-30:])
        raise CephScriptError(f"ci/ceph.sh {command} exited {done.returncode}:\n{tail}")
    return done.stdout


def parse_exports(text: str) -> dict[str, str]:
    """Read ``export NAME=VALUE`` lines (as ``ci/ceph.sh start`` prints) into a dict.

    Parameters
    ----------
    text : str
        The script's output; lines that are not ``export`` lines are ignored.

    Returns
    -------
    dict of str to str
    """
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            found[name.strip()] = value.strip().strip("'\"")
    return found


@dataclass(frozen=True)
class CephGateway:
    """A running RADOS Gateway and the credentials of its test user.

    Parameters
    ----------
    endpoint : str
        The S3 endpoint, such as ``http://127.0.0.1:23422``.
    key, secret : str
        The S3 access key and secret key.
    state_dir : str, optional
        The cluster's state folder, used to stop or start the gateway; the script's
        default (``/tmp/idigdask-ceph``) when None.

    Examples
    --------
    >>> gw = CephGateway.from_env()                      # doctest: +SKIP
    >>> gw.make_bucket("media", public_read=True)        # doctest: +SKIP
    >>> gw.filesystem().pipe("media/a.jpg", b"...")      # doctest: +SKIP
    >>> gw.public_url("media", "a.jpg")                  # doctest: +SKIP
    'http://127.0.0.1:23422/media/a.jpg'
    """

    endpoint: str
    key: str
    secret: str = field(repr=False)
    state_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CephGateway | None:
        """Build from ``IDIGDASK_S3_ENDPOINT`` and the AWS key variables.

        Parameters
        ----------
        environ : mapping, optional
            Where to read the variables; ``os.environ`` when None.

        Returns
        -------
        CephGateway or None
            None when the endpoint or either key is not set.
        """
        env = os.environ if environ is None else environ
        endpoint, key, secret = (env.get(v, "") for v in (ENDPOINT_VAR, KEY_VAR, SECRET_VAR))
        if not (endpoint and key and secret):
            return None
        return cls(endpoint.rstrip("/"), key, secret, env.get(STATE_DIR_VAR) or None)

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs ``storage_options`` for this gateway.

        No ``region_name``: s3fs would send it as the bucket location, which the
        gateway rejects when creating buckets.
        """
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint},
        }

    @property
    def env(self) -> dict[str, str]:
        """The environment variables :meth:`from_env` reads, for subprocesses."""
        env = {ENDPOINT_VAR: self.endpoint, KEY_VAR: self.key, SECRET_VAR: self.secret}
        if self.state_dir:
            env[STATE_DIR_VAR] = self.state_dir
        return env

    def filesystem(self, **kwargs: Any) -> s3fs.S3FileSystem:
        """Return a new ``s3fs.S3FileSystem`` connected to the gateway.

        Parameters
        ----------
        **kwargs
            Extra arguments for ``S3FileSystem``, over :attr:`storage_options`.

        Returns
        -------
        s3fs.S3FileSystem
            A fresh instance (not s3fs's shared cache), so closing or breaking it
            does not affect other users.
        """
        import s3fs

        options = {**self.storage_options, "skip_instance_cache": True, **kwargs}
        return s3fs.S3FileSystem(**options)

    @cached_property
    def _admin_fs(self) -> s3fs.S3FileSystem:
        # One client for bucket set-up and clean-up: making an S3 client costs ~0.2 s.
        return self.filesystem()

    def public_url(self, bucket: str, key: str) -> str:
        """Return the plain-HTTP URL of an object, as iDigBio's storage serves it.

        Parameters
        ----------
        bucket, key : str
            The bucket and the object's key.

        Returns
        -------
        str
            ``<endpoint>/<bucket>/<key>``; readable without credentials when the
            bucket was made with ``public_read=True``.
        """
        return f"{self.endpoint}/{bucket}/{key.lstrip('/')}"

    def make_bucket(self, name: str, public_read: bool = False) -> str:
        """Create a bucket (if missing) and return its name.

        Parameters
        ----------
        name : str
            The bucket name (S3 rules: 3-63 lowercase letters, digits, dots, hyphens).
        public_read : bool
            When True, a bucket policy lets anyone GET its objects without
            credentials, at :meth:`public_url`.

        Returns
        -------
        str
            ``name``.
        """
        fs = self._admin_fs
        fs.invalidate_cache()
        if not fs.exists(name):
            fs.mkdir(name)
        if public_read:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PublicRead",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject"],
                        "Resource": [f"arn:aws:s3:::{name}/*"],
                    }
                ],
            }
            fs.call_s3("put_bucket_policy", Bucket=name, Policy=json.dumps(policy))
        return name

    def remove_bucket(self, name: str) -> None:
        """Delete every object of a bucket, then the bucket; missing is not an error.

        Parameters
        ----------
        name : str
            The bucket name.
        """
        fs = self._admin_fs
        fs.invalidate_cache()
        if not fs.exists(name):
            return
        keys = fs.find(name)
        if keys:
            fs.rm(keys)
        fs.rmdir(name)

    def upload_folder(self, local: str | os.PathLike[str], bucket: str, prefix: str = "") -> list[str]:
        """Upload every file under a local folder to ``bucket/prefix/``.

        Parameters
        ----------
        local : path-like
            The folder; its relative paths become the keys after ``prefix``.
        bucket : str
            An existing bucket.
        prefix : str
            Key prefix, without leading or trailing slash ("" for the bucket root).

        Returns
        -------
        list of str
            The uploaded keys (without the bucket), sorted.

        Raises
        ------
        NotADirectoryError
            When ``local`` is not a folder.
        """
        root = Path(local)
        if not root.is_dir():
            raise NotADirectoryError(f"not a folder: {root}")
        prefix = prefix.strip("/")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        keys = ["/".join(filter(None, [prefix, f.relative_to(root).as_posix()])) for f in files]
        if files:
            # One call with lists: s3fs uploads them concurrently.
            self.filesystem().put([str(f) for f in files], [f"{bucket}/{k}" for k in keys])
        return keys

    def stop_gateway(self) -> None:
        """Stop only the radosgw process (monitor and OSD keep running).

        Raises
        ------
        CephScriptError
            When ``ci/ceph.sh`` is not available or fails.
        """
        run_ceph_script("stop-gateway", self.state_dir)

    def start_gateway(self) -> None:
        """Start the radosgw again on the same port with the same data; wait for it.

        Raises
        ------
        CephScriptError
            When ``ci/ceph.sh`` is not available or the gateway does not come back.
        """
        run_ceph_script("start-gateway", self.state_dir)
