"""CurveZMQ encryption and authentication for the ZeroMQ transport.

Activations, gradients and sample ids cross the network; between machines they should
not travel in plain text. With CURVE every connection is encrypted (Curve25519 key
exchange, libsodium bundled with pyzmq) and the client verifies the server's public key;
the server may also accept only clients whose public keys it holds (an allow-list folder).

Key files are ZeroMQ certificates: ``NAME.key`` (public, safe to share) and
``NAME.key_secret`` (keep private). ``splitfed keys DIR`` writes a pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from splitfed.errors import ConfigError


@dataclass(frozen=True)
class CurveServer:
    secret_file: Path  # the server's NAME.key_secret
    clients_dir: Path | None = None  # allow-list of client NAME.key files; None accepts any client


@dataclass(frozen=True)
class CurveClient:
    server_key_file: Path  # the server's public NAME.key
    secret_file: Path | None = None  # this client's NAME.key_secret; None = a fresh key for this run


def create_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (readable by the owner only); return (public, secret)."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(f"key file {path} does not exist; create a pair with `splitfed keys DIR`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a ZeroMQ key file: {exc}") from exc
    if need_secret and secret is None:
        raise ConfigError(f"{path} holds no secret key; give the NAME.key_secret file")
    return public, secret


def secure_server(sock: zmq.Socket, curve: CurveServer) -> object | None:
    """Make ``sock`` a CURVE server (before bind). Returns the authenticator to stop later, if any."""
    public, secret = _load(curve.secret_file, need_secret=True)
    authenticator = None
    if curve.clients_dir is not None:
        from zmq.auth.thread import ThreadAuthenticator

        if not curve.clients_dir.is_dir():
            raise ConfigError(f"client key folder {curve.clients_dir} does not exist")
        authenticator = ThreadAuthenticator(zmq.Context.instance())
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(curve.clients_dir))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return authenticator


def secure_client(sock: zmq.Socket, curve: CurveClient) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is given (before connect)."""
    server_public, _ = _load(curve.server_key_file, need_secret=False)
    if curve.secret_file is not None:
        public, secret = _load(curve.secret_file, need_secret=True)
    else:
        public, secret = zmq.curve_keypair()
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
