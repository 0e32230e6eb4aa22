"""Stateless nonces: HMAC-stamped with an expiry and bound to the client's address.

Owns the NONCE values of the long-term credential mechanism (RFC 8489 §9.2). A nonce is
`[cookie]<15 base64url characters>`: the 4-byte expiry (Unix seconds, big-endian) and a
7-byte tag, the first bytes of HMAC-SHA256 over the cookie, the expiry and the client's
transport address, keyed by a server secret. Any process that holds the secret checks
a nonce without shared state; a nonce replayed from another address, a forged one or an
expired one is stale (438). The tag only proves that we minted the nonce for that
address (authentication is the request's MESSAGE-INTEGRITY): 56 bits make a forgery a
2^56-requests affair, and keep the nonce short, since it rides in the 401 that anybody
can make us send to a forged source (issue 15: 28 characters with the cookie, so the
401 to a 28-byte Allocate stays within coturn's 100 bytes).

The optional cookie is RFC 8489 §9.2's "nonce cookie" ("obMatJos2" + the 24 security
feature bits, `trelay.stun.nonce_cookie`). It is covered by the tag, so the feature bits a
client echoes are the ones we sent: an attacker who strips or alters them in the
(unauthenticated) 401 makes the nonce stale, which is the bid-down protection of §9.2.1.

Retirement (`retire`, which `TurnServer` calls when an allocation ends): the nonces
minted for the client's address until then turn stale, so that a captured Allocate
replayed from that address after a delete is answered 438, not with a new allocation
(issue 15; RFC 8489 §9.2 leaves a nonce's validity to the server, and clients re-
challenge on 438 with the fresh NONCE it carries: aioice, Chromium, coturn's tools). A
client's own next Allocate costs one 438 round trip. Nonces minted for the address
afterwards expire at the threshold or later (up to a second beyond their lifetime), so
the fresh NONCE of that 438 is good. The table holds one entry per address whose
allocation ended within a nonce lifetime, at most `MAX_RETIRED` (the oldest go first:
their replay window reopens, nothing else changes).

Cost (issue 13 part 4): the cookie made for each feature set and the features of each
valid cookie seen are kept (at most `MAX_COOKIES` each; a full table is emptied), so a
request does not parse its cookie again. A nonce minted for an address, or whose tag
checked out for it, is kept with its expiry and features (at most `MAX_CHECKED`; a full
table is emptied), so the client's requests with it (the Allocate after the 401, the
Refresh after the Allocate) skip the base64 and the HMAC; expiry and retirement are
still checked on every request. Anybody can have a 401 sent to a forged source and so
fill the table: that only empties it sooner, and a nonce not found is checked in full.

Expiry is wall-clock Unix seconds (workers and restarts agree on it), passed in by the
caller. The alphabet (base64url) is safe inside RFC 8489's quoted-string NONCE.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections import OrderedDict

from trelay.stun.integrity import keyed_hmac
from trelay.stun.nonce_cookie import (
    NONCE_COOKIE_LENGTH,
    SecurityFeature,
    make_nonce_cookie,
    parse_nonce_cookie,
)
from trelay.turn.addressing import Address

_TAG_BYTES = 7
_BODY_LENGTH = 15  # base64url of 4 bytes of expiry and 7 of tag, unpadded
MAX_RETIRED = 65536  # addresses whose nonces were retired within a nonce lifetime
MAX_COOKIES = 64  # nonce cookies whose parse (or making) is kept, per stamper
MAX_CHECKED = 1024  # (nonce, address) pairs whose tag was checked, kept per stamper


class NonceStamper:
    """Mints and checks nonces; `lifetime` seconds after minting they turn stale."""

    __slots__ = ("_checked", "_cookies", "_features", "_key", "_retired", "lifetime")

    def __init__(self, key: bytes, lifetime: float = 3600.0) -> None:
        if len(key) < 16:
            raise ValueError("nonce key must be at least 16 bytes")
        self._key = key
        self.lifetime = lifetime
        # client address -> nonces of that address expiring before this are stale.
        self._retired: OrderedDict[Address, int] = OrderedDict()
        # The cookie minted for each feature set, and the features of each valid cookie
        # seen (the same few on every request; parsing one builds a Flag and runs a
        # regex). Bounded: emptied when `MAX_COOKIES` is reached, since clients choose
        # the cookies they send.
        self._cookies: dict[SecurityFeature, str] = {}
        self._features: dict[str, SecurityFeature] = {}
        # (nonce, address) -> (expiry, features) of nonces whose tag checked out.
        self._checked: dict[tuple[str, Address], tuple[int, SecurityFeature]] = {}

    def _body(self, cookie: str, expiry: int, client: Address) -> str:
        stamp = expiry.to_bytes(4, "big")
        message = cookie.encode() + stamp + f"|{client[0]}|{client[1]}".encode()
        tag = keyed_hmac(self._key, message, "sha256")[:_TAG_BYTES]
        return base64.urlsafe_b64encode(stamp + tag).rstrip(b"=").decode("ascii")

    def mint(
        self,
        client: Address,
        unix_now: float,
        features: SecurityFeature = SecurityFeature.NONE,
    ) -> str:
        """A nonce for `client`; with `features`, it starts with the nonce cookie."""
        cookie = ""
        if features:
            cookie = self._cookies.get(features, "")
            if not cookie:
                if len(self._cookies) >= MAX_COOKIES:
                    self._cookies.clear()
                cookie = self._cookies[features] = make_nonce_cookie(features)
        # After a retirement the address's new nonces expire at the threshold or later.
        expiry = max(int(unix_now + self.lifetime), self._retired.get(client, 0)) & 0xFFFFFFFF
        nonce = cookie + self._body(cookie, expiry, client)
        # Known good for `client` from birth: its Allocate, next, skips the HMAC (as its
        # Refresh does after it); expiry and retirement are checked on use all the same.
        self._remember(nonce, client, expiry, features)
        return nonce

    def is_valid(self, nonce: str, client: Address, unix_now: float) -> bool:
        """True if we minted `nonce` for `client` and it has not expired."""
        return self.features(nonce, client, unix_now) is not None

    def features(self, nonce: str, client: Address, unix_now: float) -> SecurityFeature | None:
        """The security features stamped into a valid `nonce` (NONE: no cookie), else None."""
        checked = self._checked.get((nonce, client))
        if checked is not None:
            expiry, known_features = checked
            if expiry < unix_now or expiry < self._retired.get(client, 0):
                return None
            return known_features
        if not nonce.isascii():
            return None  # not ours; and compare_digest refuses non-ASCII str (TypeError)
        features = SecurityFeature.NONE
        cookie = ""
        if len(nonce) == NONCE_COOKIE_LENGTH + _BODY_LENGTH:
            cookie = nonce[:NONCE_COOKIE_LENGTH]
            known = self._features.get(cookie)
            if known is None:
                parsed = parse_nonce_cookie(cookie)
                if parsed is None:
                    return None
                if len(self._features) >= MAX_COOKIES:
                    self._features.clear()
                known = self._features[cookie] = parsed
            features = known
        elif len(nonce) != _BODY_LENGTH:
            return None
        body = nonce[len(cookie) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=")
        except (binascii.Error, ValueError):
            return None
        expiry = int.from_bytes(raw[:4], "big")
        if expiry < unix_now or expiry < self._retired.get(client, 0):
            return None
        if not hmac.compare_digest(body, self._body(cookie, expiry, client)):
            return None
        self._remember(nonce, client, expiry, features)
        return features

    def _remember(
        self, nonce: str, client: Address, expiry: int, features: SecurityFeature
    ) -> None:
        """Keep a nonce known to be ours for `client` (`_checked`, bounded)."""
        if len(self._checked) >= MAX_CHECKED:
            self._checked.clear()
        self._checked[nonce, client] = (expiry, features)

    def retire(self, client: Address, unix_now: float) -> None:
        """Make stale every nonce minted for `client` before now (its allocation ended)."""
        retired = self._retired
        # + 1: a nonce minted earlier in this very second is stale too (`mint` stamps
        # the address's next nonces with this threshold at least).
        retired[client] = int(unix_now + self.lifetime) + 1
        retired.move_to_end(client)
        # Entries whose nonces have all expired anyway go; then the oldest beyond the bound.
        while retired:
            first, threshold = next(iter(retired.items()))
            if threshold > unix_now and len(retired) <= MAX_RETIRED:
                break
            del retired[first]

    @property
    def retired_count(self) -> int:
        """Addresses whose older nonces are stale now (bounded by `MAX_RETIRED`)."""
        return len(self._retired)
