"""The cluster's shared secret and what is derived from it: who may join a run, and each link's key.

Where the secret comes from
    A local run (:func:`~edgesplit.distributed.launcher.launch_local`) draws a fresh random secret
    and hands it to its own processes; nothing outside them knows it. A multi-host run needs the
    same secret on every rank: ``EDGESPLIT_CLUSTER_SECRET`` (the secret itself) or
    ``EDGESPLIT_CLUSTER_SECRET_FILE`` / ``--secret-file`` (a file holding it), at least
    :data:`MIN_SECRET_CHARS` characters (``python -c "import secrets; print(secrets.token_hex(32))"``).

What is derived from it (HMAC-SHA256 everywhere, keyed with the secret; see :func:`mac`)
    * the server's announcement in the rendezvous store (protocol version, run id, world size and
      a fresh random *server nonce*), so a device knows it talks to a server that holds the secret;
    * a device's join request (run id, rank, the server nonce, a fresh *device nonce*), so the
      server admits only devices that hold the secret, and only for this run (the server nonce is
      new every run: an old request cannot be replayed);
    * the server's acceptance of that request, so the device knows the acceptance is genuine;
    * one key per link, ``HMAC(secret, "link" | run id | server nonce | rank | device nonce)``,
      that authenticates every message of that link (:class:`~edgesplit.distributed.protocol.LinkAuth`).

The store only ever holds public values (nonces, run id, MACs): nothing in it lets a reader join,
forge or replay a message. See the threat model in ``docs/distributed.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from edgesplit.distributed.protocol import ProtocolError

SECRET_ENV = "EDGESPLIT_CLUSTER_SECRET"
SECRET_FILE_ENV = "EDGESPLIT_CLUSTER_SECRET_FILE"
MIN_SECRET_CHARS = 16
_HINT = ("at least 16 characters, the same on every host; e.g. "
         "`python -c \"import secrets; print(secrets.token_hex(32))\"`")


class AuthError(ProtocolError):
    """A peer failed authentication (wrong or missing secret, or not an edgesplit peer)."""


def new_secret() -> bytes:
    """A fresh random secret (32 bytes) for a local run."""
    return secrets.token_bytes(32)


def new_nonce() -> str:
    """A fresh random nonce (128 bits, hex): public, used once."""
    return secrets.token_hex(16)


def load_secret(environ: dict[str, str] | None = None, secret_file: str | None = None) -> bytes:
    """The shared secret of a multi-host run: ``secret_file`` (``--secret-file``), else the file named
    by ``EDGESPLIT_CLUSTER_SECRET_FILE``, else ``EDGESPLIT_CLUSTER_SECRET``. Raises
    :class:`AuthError` (one line, naming the variable) when none is set or it is too short."""
    env = os.environ if environ is None else environ
    path = secret_file or env.get(SECRET_FILE_ENV)
    if path:
        where = "--secret-file" if secret_file else SECRET_FILE_ENV
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"{where}: cannot read the secret from {path} ({type(exc).__name__})") from None
    else:
        where = SECRET_ENV
        text = env.get(SECRET_ENV, "")
        if not text:
            raise AuthError(f"{SECRET_ENV}: not set; a multi-host cluster run needs a shared secret on every rank "
                            f"({_HINT}), or {SECRET_FILE_ENV}=FILE / --secret-file FILE")
    if len(text) < MIN_SECRET_CHARS:
        raise AuthError(f"{where}: the secret has {len(text)} characters; need {_HINT}")
    return text.encode("utf-8")


def mac(key: bytes, label: str, *parts: object) -> str:
    """Hex HMAC-SHA256 of ``label`` and ``parts`` (joined with ``|``) under ``key``."""
    msg = "|".join(["edgesplit", label, *(str(p) for p in parts)]).encode("utf-8")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def verify(key: bytes, claimed: object, label: str, *parts: object) -> bool:
    """Whether ``claimed`` is :func:`mac` of the same inputs (constant-time comparison)."""
    return isinstance(claimed, str) and hmac.compare_digest(claimed, mac(key, label, *parts))


def link_key(secret: bytes, run_id: int, server_nonce: str, rank: int, device_nonce: str) -> bytes:
    """The HMAC key of the link between the server and device ``rank`` in this run."""
    return hmac.new(secret, f"edgesplit|link|{run_id:#x}|{server_nonce}|{rank}|{device_nonce}".encode(),
                    hashlib.sha256).digest()
