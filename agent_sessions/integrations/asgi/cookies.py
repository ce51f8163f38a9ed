"""Session cookies: which credential a request presents, and the ``Set-Cookie`` values to answer.

No I/O here. A credential is checked against the exact shape of a server-issued id before
anything else sees it, and nothing the client sent is ever echoed back.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Literal

from starlette.types import Scope

from ...ids import is_valid_session_id

__all__ = ["CookiePolicy", "Credential", "SameSite", "Transport"]

logger = logging.getLogger(__name__)

SameSite = Literal["lax", "strict", "none"]
Transport = Literal["cookie", "header"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: cookie and header names
_ATTRIBUTE = re.compile(r"[\x21-\x3a\x3c-\x7e]+")  # printable ASCII without ';' or spaces
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"


@dataclass(frozen=True, slots=True)
class Credential:
    """The session id a request presents, already shape-checked, and how it travelled.

    `session_id` is None when the request sent none, a malformed one, or several (ambiguous).
    `had_cookie` says whether a session cookie was sent at all (then a logout expires it).
    """

    session_id: str | None
    transport: Transport
    had_cookie: bool


class CookiePolicy:
    """The cookie settings of a `SessionMiddleware`, validated once; reads credentials from a
    request's headers and builds the ``Set-Cookie`` values.

    Raises `ValueError` for a setting a browser would reject or that could inject attributes.
    """

    def __init__(
        self,
        *,
        name: str = "session_id",
        max_age: int | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: SameSite = "lax",
        header_name: str | None = "X-Session-ID",
    ) -> None:
        if not _TOKEN.fullmatch(name):
            raise ValueError("cookie_name must be a non-empty token (letters, digits and !#$%&'*+-.^_`|~)")
        if header_name is not None and not _TOKEN.fullmatch(header_name):
            raise ValueError("header_name must be a valid HTTP header name, or None")
        if not path.startswith("/") or not _ATTRIBUTE.fullmatch(path):
            raise ValueError("cookie_path must start with '/' and hold no spaces, ';' or control characters")
        if domain is not None and not _ATTRIBUTE.fullmatch(domain):
            raise ValueError("cookie_domain must hold no spaces, ';' or control characters")
        if samesite not in ("lax", "strict", "none"):
            raise ValueError("cookie_samesite must be 'lax', 'strict' or 'none'")
        if samesite == "none" and not secure:
            raise ValueError("cookie_samesite='none' requires cookie_secure=True (browsers reject it otherwise)")
        if max_age is not None and max_age <= 0:
            raise ValueError("cookie_max_age must be > 0 seconds, or None for a browser-session cookie")
        self.name = name
        self.max_age = max_age
        self.header_name = header_name
        self._cookie_key = name.encode("latin-1")
        self._header_key = header_name.lower().encode("latin-1") if header_name else None
        #: The response header that carries a new id to a client that came with the header.
        self.header_label = header_name.lower() if header_name else ""
        #: What a response that used the session varies on.
        self.vary: tuple[str, ...] = ("Cookie", header_name) if header_name else ("Cookie",)
        attributes = [f"Path={path}"]
        if domain is not None:
            attributes.append(f"Domain={domain}")
        if secure:
            attributes.append("Secure")
        if httponly:
            attributes.append("HttpOnly")
        attributes.append(f"SameSite={samesite.capitalize()}")
        self._attributes = "; ".join(attributes)

    def credential(self, scope: Scope) -> Credential:
        """The request's credential: the session cookie if sent (the only one considered then),
        else the `header_name` header. Several values of the one in use count as none."""
        cookies: list[bytes] = []
        header_values: list[bytes] = []
        for key, value in scope.get("headers", ()):
            if key == b"cookie":
                for part in value.split(b";"):
                    name, sep, raw = part.partition(b"=")
                    if sep and name.strip() == self._cookie_key:
                        cookies.append(raw.strip())
            elif self._header_key is not None and key == self._header_key:
                header_values.append(value.strip())
        transport: Transport = "cookie"
        values = cookies
        if not cookies and header_values:
            transport, values = "header", header_values
        session_id: str | None = None
        if len(values) == 1:
            candidate = values[0].decode("latin-1")
            if is_valid_session_id(candidate):
                session_id = candidate
            else:
                logger.debug("ignoring a malformed session id from the %s (length %d)", transport, len(candidate))
        elif len(values) > 1:
            logger.debug("ignoring %d conflicting session ids from the %s", len(values), transport)
        return Credential(session_id, transport, had_cookie=bool(cookies))

    def issue(self, session_id: str, expiry_at: float | None, now: float) -> str:
        """The ``Set-Cookie`` value carrying `session_id`; its ``Max-Age`` (when `max_age` is set)
        never outlives the server-side expiry."""
        parts = [f"{self.name}={session_id}", self._attributes]
        if self.max_age is not None:
            max_age = self.max_age
            if expiry_at is not None:
                max_age = max(1, min(max_age, math.ceil(expiry_at - now)))
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts)

    def expire(self) -> str:
        """The ``Set-Cookie`` value deleting the cookie (same attributes as the issued one)."""
        return f"{self.name}=; {self._attributes}; Max-Age=0; Expires={_EPOCH}"
