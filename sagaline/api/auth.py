"""Bearer tokens, the API's only way in: configured once, kept only as SHA-256 hashes.

A deployment gives raw tokens (``SAGALINE_API_TOKENS``, comma-separated) or only their
hashes (``SAGALINE_API_TOKEN_HASHES``, comma-separated ``sha256:<hex>``), so the machine
serving the API need not hold a raw token at all. Raw tokens are hashed as they are read;
a request's token is hashed too and compared with every hash in constant time
(:func:`hmac.compare_digest`), so neither the tokens nor the time taken tell anything. A
missing, malformed and wrong token get the same answer; no token is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sagaline.errors import ConfigurationError

TOKENS_VARIABLE = "SAGALINE_API_TOKENS"
"""Where raw tokens come from, comma-separated (when the app's settings do not say)."""
HASHES_VARIABLE = "SAGALINE_API_TOKEN_HASHES"
"""Where token hashes come from, comma-separated ``sha256:<hex>``."""
MIN_TOKEN_LENGTH = 32
"""The fewest characters a raw token may have: tokens are random, not passwords."""
UNAUTHORIZED = ("a valid API token is required: send it as 'Authorization: Bearer <token>' "
                "(the server's tokens are in SAGALINE_API_TOKENS or SAGALINE_API_TOKEN_HASHES)")
"""The one answer to a request without a valid token, whatever was wrong with it."""

NO_TOKENS = (f"the API does not start without a token, since anyone who reached it could "
             f"start and cancel sagas: set {TOKENS_VARIABLE} (comma-separated tokens of at "
             f"least {MIN_TOKEN_LENGTH} random characters) or {HASHES_VARIABLE} "
             "(comma-separated sha256:<hex> of tokens), then start it again")
"""Why the API refuses to start with no token configured, and what to set."""

_SCHEME = HTTPBearer(auto_error=False, scheme_name="token",
                     description="An API token: Authorization: Bearer <token>.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_SCHEME)]
"""A request's bearer credentials (``None`` when it sent none); the docs show the scheme."""

_MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_MAKE_HASH = "printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1"


class TokenSet:
    """The SHA-256 hashes of the tokens the API accepts; never the tokens themselves.

    Example:
        >>> tokens = TokenSet.parse("s3cr3t-" + "x" * 30, None)
        >>> tokens.accepts("s3cr3t-" + "x" * 30), tokens.accepts("guess")
        (True, False)
    """

    def __init__(self, hashes: Iterable[bytes]) -> None:
        """Accept the tokens whose SHA-256 digests are ``hashes``."""
        self._hashes = tuple(dict.fromkeys(hashes))

    @classmethod
    def parse(cls, tokens: str | None, hashes: str | None) -> TokenSet:
        """Read raw tokens and token hashes as the variables spell them.

        Args:
            tokens: Raw tokens, comma-separated, each at least :data:`MIN_TOKEN_LENGTH`
                printable ASCII characters without spaces; hashed here and not kept.
            hashes: ``sha256:<64 hex digits>`` entries, comma-separated.

        Returns:
            The set; empty when both are empty or ``None``.

        Raises:
            ConfigurationError: An entry is malformed; the message names the variable and
                the entry's position, never the token.
        """
        digests = [_token_digest(n, token) for n, token in _entries(tokens)]
        digests += [_hash_digest(n, entry) for n, entry in _entries(hashes)]
        return cls(digests)

    @classmethod
    def configured(cls, settings: object, environ: Mapping[str, str]) -> TokenSet:
        """The tokens the app's settings name, else those in the environment.

        Args:
            settings: The app module's settings object; its ``api_tokens`` (a string or a
                ``SecretStr``) and ``api_token_hashes`` are used when it has them.
            environ: The environment, read for :data:`TOKENS_VARIABLE` and
                :data:`HASHES_VARIABLE` when the settings lack those fields.

        Returns:
            The set (empty when none is configured).

        Raises:
            ConfigurationError: An entry is malformed.
        """
        return cls.parse(_setting(settings, "api_tokens", environ, TOKENS_VARIABLE),
                         _setting(settings, "api_token_hashes", environ, HASHES_VARIABLE))

    def __len__(self) -> int:
        """How many tokens are accepted."""
        return len(self._hashes)

    def __repr__(self) -> str:
        """How many tokens, never which."""
        return f"TokenSet({len(self)} tokens)"

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is one of the set's, compared in constant time with each."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = False
        for known in self._hashes:  # no early exit: the time says nothing about which
            found |= hmac.compare_digest(digest, known)
        return found


def bearer_guard(tokens: TokenSet) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with one of ``tokens``.

    Args:
        tokens: The accepted tokens.

    Returns:
        The dependency; it raises a 401 with ``WWW-Authenticate: Bearer`` and the body
        :data:`UNAUTHORIZED` for a missing, malformed or wrong token alike.
    """

    async def require_token(credentials: Credentials) -> None:
        if credentials is None or not tokens.accepts(credentials.credentials):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=UNAUTHORIZED,
                                headers={"WWW-Authenticate": "Bearer"})

    return require_token


def _setting(settings: object, field: str, environ: Mapping[str, str], variable: str
             ) -> str | None:
    """The settings' ``field`` when they have one (a secret revealed), else ``variable``."""
    if settings is None or not hasattr(settings, field):
        return environ.get(variable)
    value = getattr(settings, field)
    reveal = getattr(value, "get_secret_value", None)
    return None if value is None else str(reveal() if callable(reveal) else value)


def _entries(raw: str | None) -> list[tuple[int, str]]:
    """The comma-separated entries of ``raw``, stripped, numbered from 1; empty ones skipped."""
    parts = (part.strip() for part in (raw or "").split(","))
    return [(n, part) for n, part in enumerate(parts, start=1) if part]


def _token_digest(number: int, token: str) -> bytes:
    """A raw token's SHA-256 digest, once it is long enough and fit for a header."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"{TOKENS_VARIABLE}: token {number} has {len(token)} characters; use tokens of "
            f"at least {MIN_TOKEN_LENGTH} random characters, such as made by {_MAKE_TOKEN}")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ConfigurationError(
            f"{TOKENS_VARIABLE}: token {number} has characters an HTTP header cannot carry; "
            f"use printable ASCII without spaces, such as made by {_MAKE_TOKEN}")
    return hashlib.sha256(token.encode()).digest()


def _hash_digest(number: int, entry: str) -> bytes:
    """The digest a ``sha256:<hex>`` entry spells."""
    algorithm, _, hexdigest = entry.partition(":")
    try:
        digest = bytes.fromhex(hexdigest)
    except ValueError:
        digest = b""
    if algorithm.lower() != "sha256" or len(digest) != hashlib.sha256().digest_size:
        raise ConfigurationError(
            f"{HASHES_VARIABLE}: entry {number} is not sha256:<64 hex digits>; make one from "
            f"a token with {_MAKE_HASH} and write it as sha256:<that>")
    return digest
