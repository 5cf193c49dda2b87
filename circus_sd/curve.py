"""CURVE authentication and encryption for tcp:// endpoints (ZMQ's own, via zmq.auth).

The server holds a secret key file and a directory of authorized client public keys; a client
holds its own secret key file and the server's public key file. Key files are zmq.auth's
certificate format (`circus-sd --make-curve-keys DIR` writes a set).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

# Client side: where circusctl and the Python client find their keys.
SERVER_KEY_ENV = "CIRCUSCTL_CURVE_SERVER_KEY"  # the server's public key file
CLIENT_KEY_ENV = "CIRCUSCTL_CURVE_KEY"  # the client's secret key file


# A NamedTuple, not a dataclass: circusctl imports this, and dataclasses cost it ~8 ms.
class ClientKeys(NamedTuple):
    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_env(cls) -> ClientKeys | None:
        server_file = os.environ.get(SERVER_KEY_ENV)
        client_file = os.environ.get(CLIENT_KEY_ENV)
        if not server_file or not client_file:
            return None
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(server_file)
        public, secret = zmq.auth.load_certificate(client_file)
        if secret is None:
            raise ValueError(f"{client_file}: not a secret key file")
        return cls(server_public, public, secret)

    def apply(self, socket: Any) -> None:
        """Make `socket` a CURVE client of the server; call before connect()."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret


def apply_client_keys_from_env(socket: Any, endpoint: str) -> None:
    """Configure CURVE on a client socket for a tcp:// endpoint when the keys are given."""
    if not endpoint.startswith("tcp://"):
        return
    keys = ClientKeys.from_env()
    if keys is not None:
        keys.apply(socket)


def make_server(socket: Any, secret_key_file: str) -> None:
    """Make `socket` a CURVE server with the key pair in `secret_key_file`; before bind()."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(secret_key_file)
    if secret is None:
        raise ValueError(f"{secret_key_file}: not a secret key file")
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True


def make_keys(directory: str) -> list[str]:
    """A server key pair, a client key pair, and `clients/` holding the client's public key.

    The server needs `server.key_secret` and `clients/`; each client, `server.key` and its own
    `client.key_secret`. Returns the paths written.
    """
    import shutil

    import zmq.auth

    os.makedirs(directory, mode=0o700, exist_ok=True)
    written = []
    for name in ("server", "client"):
        public, secret = zmq.auth.create_certificates(directory, name)
        os.chmod(secret, 0o600)
        written += [public, secret]
    clients = os.path.join(directory, "clients")
    os.makedirs(clients, mode=0o700, exist_ok=True)
    written.append(shutil.copy(os.path.join(directory, "client.key"), clients))
    return written
