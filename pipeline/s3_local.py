"""A local S3-compatible endpoint for demos and tests: moto's server on 127.0.0.1, over real
HTTP. The code under test talks to it through boto3 exactly as it would to AWS or MinIO."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "nice-local", "AWS_SECRET_ACCESS_KEY": "nice-local-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}


def _die_with_parent() -> None:
    """In the server's process before exec (Linux): SIGTERM when the process that started it
    dies, so a killed `nice demo` or bench does not leave the server running."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc Linux: the server is stopped on a clean exit only
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalS3:
    """`with LocalS3() as url:` starts the server, points boto3 at it through the standard
    environment variables (AWS_ENDPOINT_URL, keys, region), and restores them on exit."""

    def __init__(self, port: int | None = None, credentials: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**(credentials or DEMO_CREDENTIALS), "AWS_ENDPOINT_URL": self.url}
        self._old: dict[str, str | None] = {}
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        import boto3

        server = Path(sys.executable).parent / "moto_server"
        cmd = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
        self._proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self._old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3").list_buckets()
                return self.url
            except Exception:  # noqa: BLE001 - not up yet
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"the local S3 endpoint did not start on {self.url}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        for k, v in self._old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
