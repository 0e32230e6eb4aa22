"""The nonce stamper's cookie caches (`trelay.turn.nonces`, issue 13 part 4: a cheaper
Allocate) change nothing a client sees: past their bound, every nonce is minted and
checked as without them, and they hold no more than the bound."""

from __future__ import annotations

from trelay.stun.nonce_cookie import NONCE_COOKIE_LENGTH, SecurityFeature, make_nonce_cookie
from trelay.turn import nonces
from trelay.turn.nonces import NonceStamper

KEY = b"k" * 32
CLIENT = ("203.0.113.5", 50000)
OTHER_CLIENT = ("203.0.113.6", 50000)
NOW = 1_700_000_000.0


def test_cookie_caches_stay_bounded_and_right_past_their_bound() -> None:
    """The stamper keeps each cookie it made and each cookie it parsed (issue 13: the same
    few on every request); past `MAX_COOKIES` distinct ones it still mints and checks
    every nonce as without the caches, and never holds more than the bound."""
    stamper = NonceStamper(KEY, lifetime=60)
    for value in range(1, nonces.MAX_COOKIES * 2 + 5):
        features = SecurityFeature(value)
        nonce = stamper.mint(CLIENT, NOW, features)
        assert nonce.startswith(make_nonce_cookie(features))
        assert stamper.features(nonce, CLIENT, NOW) == features
        assert stamper.features(nonce, OTHER_CLIENT, NOW) is None
        # Another cookie spliced onto a valid body: its tag no longer matches.
        forged = make_nonce_cookie(SecurityFeature(value ^ 1)) + nonce[NONCE_COOKIE_LENGTH:]
        assert stamper.features(forged, CLIENT, NOW) is None
        assert len(stamper._cookies) <= nonces.MAX_COOKIES
        assert len(stamper._features) <= nonces.MAX_COOKIES


def test_checked_nonces_still_expire_retire_and_stay_bounded() -> None:
    """A nonce whose tag was checked is not checked again for that address (issue 13:
    the Refresh after the Allocate), but it still expires, turns stale when the address
    is retired, means nothing from another address, and the table keeps its bound."""
    stamper = NonceStamper(KEY, lifetime=60)
    nonce = stamper.mint(CLIENT, NOW, SecurityFeature.PASSWORD_ALGORITHMS)
    assert stamper.features(nonce, CLIENT, NOW) == SecurityFeature.PASSWORD_ALGORITHMS
    assert (nonce, CLIENT) in stamper._checked
    assert stamper.features(nonce, CLIENT, NOW + 1) == SecurityFeature.PASSWORD_ALGORITHMS
    assert stamper.features(nonce, OTHER_CLIENT, NOW) is None
    assert stamper.features(nonce, CLIENT, NOW + 61) is None  # expired
    stamper.retire(CLIENT, NOW + 2)
    assert stamper.features(nonce, CLIENT, NOW + 2) is None  # retired
    for port in range(nonces.MAX_CHECKED + 10):
        client = ("203.0.113.7", port)
        fresh = stamper.mint(client, NOW, SecurityFeature.NONE)
        assert stamper.features(fresh, client, NOW) == SecurityFeature.NONE
        assert len(stamper._checked) <= nonces.MAX_CHECKED


def test_a_minted_nonce_is_known_at_once_and_still_checked_in_full_elsewhere() -> None:
    """`mint` remembers the nonce for its address (issue 13: the Allocate after the 401
    skips the HMAC); a stamper that did not mint it (another worker) checks its tag, and
    retirement makes it stale from the table too."""
    stamper = NonceStamper(KEY, lifetime=60)
    nonce = stamper.mint(CLIENT, NOW, SecurityFeature.PASSWORD_ALGORITHMS)
    assert (nonce, CLIENT) in stamper._checked
    assert stamper.features(nonce, CLIENT, NOW) == SecurityFeature.PASSWORD_ALGORITHMS
    other = NonceStamper(KEY, lifetime=60)
    assert other.features(nonce, CLIENT, NOW) == SecurityFeature.PASSWORD_ALGORITHMS
    assert NonceStamper(b"x" * 32, lifetime=60).features(nonce, CLIENT, NOW) is None
    stamper.retire(CLIENT, NOW)
    assert stamper.features(nonce, CLIENT, NOW) is None
