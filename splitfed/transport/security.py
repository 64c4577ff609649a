"""CurveZMQ encryption and authentication for the ZeroMQ transport, and the policy around it.

Activations, gradients, labels and model weights cross the network; between machines they
must not travel in plain text, nor reach whoever can connect. With CURVE every connection
is encrypted (Curve25519 key exchange, libsodium bundled with pyzmq) and the client
verifies the server's public key. With an allow-list folder the server admits only the
clients whose public keys it holds, and **binds each to the name its key is listed
under**: a member cannot claim another member's name.

Key files are ZeroMQ certificates: ``NAME.key`` (public, safe to share) and
``NAME.key_secret`` (private: refused if other users can read it). ``splitfed keys DIR
--clients a,b`` writes everything a federation needs in one step (:func:`make_federation`).

Policy (:func:`require_server_security`, :func:`require_client_security`): a server on an
address other machines can reach refuses to start without keys and an allow-list, and a
client refuses a remote server whose key it was not given, unless ``--insecure``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from splitfed.errors import ConfigError

LOCAL_SCHEMES = ("ipc://", "inproc://", "memory://")


@dataclass(frozen=True)
class CurveServer:
    secret_file: Path  # the server's NAME.key_secret
    clients_dir: Path | None = None  # allow-list of client NAME.key files; None accepts any client


@dataclass(frozen=True)
class CurveClient:
    server_key_file: Path  # the server's public NAME.key
    secret_file: Path | None = None  # this client's NAME.key_secret; None = a fresh key for this run


def is_local(address: str) -> bool:
    """True for addresses only this machine can reach: ipc://, inproc://, memory://, tcp on a loopback IP
    or ``localhost``.

    Other host names count as remote even when they resolve to loopback now: ZeroMQ
    resolves them again at every (re)connect, and the answer may change.
    """
    if address.startswith(LOCAL_SCHEMES):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_server_security(address: str, curve: CurveServer | None, insecure: bool) -> str | None:
    """Refuse an open server on an address other machines can reach; return a warning for --insecure."""
    if is_local(address):
        return None
    if curve is not None and curve.clients_dir is not None:
        return None
    if insecure:
        return (
            f"warning: --insecure: {address} accepts any client that reaches it, and model weights, activations, "
            "gradients and labels cross the network in plain text"
        )
    missing = "--curve-clients (an allow-list)" if curve is not None else "--curve-secret and --curve-clients"
    raise ConfigError(
        f"{address} can be reached from other machines, so the server needs {missing}: make the keys with "
        "`splitfed keys DIR --clients NAME1,NAME2` (it prints the commands), bind loopback "
        "(--address tcp://127.0.0.1:PORT), or pass --insecure to run open and in plain text"
    )


def require_client_security(address: str, curve: CurveClient | None, insecure: bool) -> str | None:
    """Refuse a remote server whose public key was not given; return a warning for --insecure."""
    if is_local(address) or curve is not None:
        return None
    if insecure:
        return f"warning: --insecure: talking to {address} in plain text, without checking who answers"
    raise ConfigError(
        f"{address} is on another machine: pass --server-key (the server's public NAME.key, from "
        "`splitfed keys`) so the connection is encrypted and the server checked, or --insecure"
    )


def create_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (readable by the owner only); return (public, secret).

    The pair is made in a fresh 0700 folder and moved into place, so the secret is never
    readable by others, not even for a moment; existing keys are never overwritten.
    """
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    taken = [p for p in (public, secret) if p.exists()]
    if taken:
        raise ConfigError(f"{taken[0]} exists already; keys are never overwritten: remove it or choose another DIR")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=folder))  # mode 0700
    try:
        made_public, made_secret = (Path(p) for p in zmq.auth.create_certificates(str(staging), name))
        os.chmod(made_secret, 0o600)
        os.replace(made_secret, secret)
        os.replace(made_public, public)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return public, secret


@dataclass(frozen=True)
class Federation:
    """The files :func:`make_federation` wrote."""

    server_secret: Path  # keep on the server machine
    server_public: Path
    allowed: Path  # the allow-list folder for --curve-clients
    clients: dict[str, Path]  # name -> the folder to hand to that client (its pair + the server's public key)


def make_federation(folder: Path, clients: list[str]) -> Federation:
    """Every key a run across machines needs: the server's pair, one pair per client, the allow-list.

    Layout::

        DIR/server/server.key, server.key_secret      the server's pair (the secret stays there)
        DIR/allowed/NAME.key                          the allow-list: --curve-clients DIR/allowed
        DIR/NAME/NAME.key, NAME.key_secret, server.key   hand this folder to client NAME
    """
    names = [n.strip() for n in clients if n.strip()]
    bad = [n for n in names if not n.replace("-", "").replace("_", "").replace(".", "").isalnum()]
    if not names or bad or len(set(names)) != len(names) or "server" in names or "allowed" in names:
        raise ConfigError(
            f"--clients {','.join(clients)!r}: give distinct names of letters, digits, '-', '_' or '.', "
            "other than 'server' and 'allowed', e.g. --clients hospital-a,hospital-b"
        )
    taken = [p for p in [folder / "server", folder / "allowed", *(folder / n for n in names)] if p.exists()]
    if taken:
        raise ConfigError(f"{taken[0]} exists already; choose an empty DIR, or remove the old keys first")
    server_public, server_secret = create_keys(folder / "server", "server")
    (folder / "allowed").mkdir(parents=True)
    handed: dict[str, Path] = {}
    for name in names:
        public, _ = create_keys(folder / name, name)
        shutil.copyfile(public, folder / "allowed" / public.name)
        shutil.copyfile(server_public, folder / name / server_public.name)
        handed[name] = folder / name
    return Federation(server_secret, server_public, folder / "allowed", handed)


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(f"key file {path} does not exist; create the keys with `splitfed keys DIR --clients ...`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a ZeroMQ key file: {exc}") from exc
    if need_secret and secret is None:
        raise ConfigError(f"{path} holds no secret key; give the NAME.key_secret file")
    if secret is not None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} holds a secret key that other users can read (mode {mode:o}); "
                f"make it private: chmod 600 {path}"
            )
    return public, secret


class NamedKeys(ThreadAuthenticator):
    """Admits the clients whose public keys are in the allow-list folder, and names each by its key.

    ZeroMQ hands the name (the key file's stem) to the server with every message as the
    ``User-Id`` property, so the transport can refuse a client that calls itself otherwise.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(zmq.Context.instance())
        self.names: dict[bytes, str] = {}  # z85 public key -> the key file's stem
        for key_file in sorted(folder.glob("*.key")):
            public, _ = _load(key_file, need_secret=False)
            self.names[public] = key_file.stem

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names.get(z85.encode(client_public_key), "")  # ZeroMQ hands over the raw 32 bytes


def secure_server(sock: zmq.Socket, curve: CurveServer) -> NamedKeys | None:
    """Make ``sock`` a CURVE server (before bind). Returns the authenticator to stop later, if any."""
    public, secret = _load(curve.secret_file, need_secret=True)
    authenticator = None
    if curve.clients_dir is not None:
        if not curve.clients_dir.is_dir():
            raise ConfigError(f"client key folder {curve.clients_dir} does not exist")
        authenticator = NamedKeys(curve.clients_dir)
        if not authenticator.names:
            raise ConfigError(f"{curve.clients_dir} holds no client NAME.key file; nobody could join")
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
