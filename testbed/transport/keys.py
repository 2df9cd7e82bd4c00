"""CURVE key directories (``testbed keys``): who the server is and which clients it admits.

Layout of a key directory::

    server.key, server.key_secret        the server keypair (ZeroMQ certificate files)
    <name>.key, <name>.key_secret        one keypair per client (default name: client)
    authorized_clients/<name>.key        public keys the server accepts; delete one to revoke

A client needs ``server.key`` and its own ``.key_secret``; the server needs
``server.key_secret`` and ``authorized_clients/``. Copy only those to each side.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

AUTHORIZED = "authorized_clients"


@dataclass(frozen=True)
class CurveKeys:
    """Client-side CURVE material (z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_dir(cls, directory: str | Path, name: str = "client") -> CurveKeys:
        import zmq.auth

        directory = Path(directory)
        server_public, _ = zmq.auth.load_certificate(_need(directory / "server.key"))
        public, secret = zmq.auth.load_certificate(_need(directory / f"{name}.key_secret"))
        if secret is None:
            raise ValueError(f"{directory / (name + '.key_secret')} holds no secret key")
        return cls(server_public, public, secret)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: create keys with `testbed keys {path.parent}`")
    return path


def load_server_keys(directory: str | Path) -> tuple[bytes, bytes, Path]:
    """(public, secret, authorized_dir) of the server side of a key directory."""
    import zmq.auth

    directory = Path(directory)
    public, secret = zmq.auth.load_certificate(_need(directory / "server.key_secret"))
    authorized = directory / AUTHORIZED
    if not authorized.is_dir():
        raise FileNotFoundError(f"{authorized} is missing: create keys with `testbed keys {directory}`")
    return public, secret, authorized


def generate_keys(directory: str | Path, clients: tuple[str, ...] = ("client",)) -> Path:
    """Create the server keypair (if absent) and one authorized keypair per client name."""
    import zmq.auth

    directory = Path(directory)
    (directory / AUTHORIZED).mkdir(parents=True, exist_ok=True)
    if not (directory / "server.key_secret").exists():
        zmq.auth.create_certificates(directory, "server")
    for name in clients:
        if not (directory / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(directory, name)
        shutil.copyfile(directory / f"{name}.key", directory / AUTHORIZED / f"{name}.key")
    for secret in directory.glob("*.key_secret"):
        secret.chmod(0o600)
    return directory
