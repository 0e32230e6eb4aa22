"""Access tokens: minting, every refusal reason, and tokens made by Twilio's helper library."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from twilio.jwt.access_token import AccessToken  # type: ignore[import-untyped]
from twilio.jwt.access_token.grants import VideoGrant  # type: ignore[import-untyped]

from trelay.config.api_keys import ApiKey, ApiKeys
from trelay.config.revocations import Revocation, Revocations
from trelay.credentials.access_tokens import (
    LEEWAY_SECONDS,
    TokenError,
    TokenReason,
    mint_token,
    verify_token,
)

ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
OTHER_ACCOUNT = "AC" + "ffeeddccbbaa99887766554433221100"
KEY = ApiKey("SK" + "0123456789abcdef" * 2, "k" * 40, ACCOUNT)
OTHER = ApiKey("SK" + "fedcba9876543210" * 2, "o" * 40, ACCOUNT)
KEYS = ApiKeys((KEY, OTHER))
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def handmade(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT assembled by hand, signed with HMAC-SHA256 under `secret` (or unsigned)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.digest(secret, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "jti": f"{KEY.sid}-1",
        "iss": KEY.sid,
        "sub": ACCOUNT,
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "grants": {"identity": "alice"},
    }
    return base | overrides


def refused(token: str | None, now: float = NOW, keys: ApiKeys = KEYS) -> TokenReason:
    with pytest.raises(TokenError) as caught:
        verify_token(token, keys, now)
    assert caught.value.message
    assert KEY.secret not in str(caught.value)
    return caught.value.reason


def test_a_minted_token_has_twilio_s_shape_and_verifies() -> None:
    token = mint_token(KEY, "alice", NOW, ttl=600)
    header = jwt.get_unverified_header(token)
    assert header == {"typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1"}
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["iss"] == KEY.sid and body["sub"] == ACCOUNT
    assert body["nbf"] == int(NOW) and body["exp"] == int(NOW) + 600
    assert body["grants"] == {"identity": "alice"}
    assert body["jti"].startswith(KEY.sid + "-") and len(body["jti"]) > len(KEY.sid) + 8
    verified = verify_token(token, KEYS, NOW + 1)
    assert verified.identity == "alice"
    assert verified.key == KEY and verified.account == ACCOUNT
    assert verified.expires_at == int(NOW) + 600
    assert mint_token(KEY, "alice", NOW) != mint_token(KEY, "alice", NOW)  # fresh jti


def test_the_expiry_respects_the_key_s_not_after() -> None:
    ending = ApiKey(KEY.sid, KEY.secret, ACCOUNT, dt.datetime.fromtimestamp(NOW + 60, dt.UTC))
    token = mint_token(ending, "alice", NOW, ttl=3600)
    assert verify_token(token, ApiKeys((ending,)), NOW).expires_at == NOW + 60
    # Past its not_after, the key's tokens are refused even within their own exp.
    long_lived = mint_token(KEY, "alice", NOW, ttl=3600)
    assert refused(long_lived, NOW + 120, ApiKeys((ending,))) is TokenReason.EXPIRED


def test_missing_and_malformed() -> None:
    assert refused(None) is TokenReason.MISSING
    assert refused("") is TokenReason.MISSING
    assert refused("not-a-jwt") is TokenReason.MALFORMED
    assert refused("a.b.c") is TokenReason.MALFORMED
    for bad in (
        claims(exp="tomorrow"),
        claims(nbf="now"),
        claims(exp=True),
        claims(grants=[]),
        claims(grants={"video": {}}),
        claims(grants={"identity": 7}),
        claims(grants={"identity": "x" * 300}),
        claims(grants={"identity": "new\nline"}),
    ):
        token = handmade({"alg": "HS256", "typ": "JWT"}, bad, KEY.secret.encode())
        assert refused(token) is TokenReason.MALFORMED, bad
    no_iss = claims()
    del no_iss["iss"]
    assert refused(handmade({"alg": "HS256"}, no_iss, KEY.secret.encode())) is (
        TokenReason.MALFORMED
    )
    no_exp = claims()
    del no_exp["exp"]
    assert refused(handmade({"alg": "HS256"}, no_exp, KEY.secret.encode())) is (
        TokenReason.MALFORMED
    )


def test_alg_none_and_other_algorithms_are_refused() -> None:
    assert refused(handmade({"alg": "none", "typ": "JWT"}, claims(), None)) is (
        TokenReason.ALG_NOT_ALLOWED
    )
    assert refused(handmade({"alg": "None"}, claims(), None)) is TokenReason.ALG_NOT_ALLOWED
    # A token "signed" with the HMAC secret but claiming RS256/ES256/HS512.
    for alg in ("RS256", "ES256", "HS512", "PS256"):
        token = handmade({"alg": alg, "typ": "JWT"}, claims(), KEY.secret.encode())
        assert refused(token) is TokenReason.ALG_NOT_ALLOWED
    no_alg = handmade({"typ": "JWT"}, claims(), KEY.secret.encode())
    assert refused(no_alg) is TokenReason.ALG_NOT_ALLOWED


def test_forged_signature_and_wrong_key() -> None:
    token = mint_token(KEY, "alice", NOW)
    head, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert refused(f"{head}.{body}.{flipped}") is TokenReason.BAD_SIGNATURE
    # The claims of another identity under the original signature.
    forged_body = b64(json.dumps(claims(grants={"identity": "mallory"})).encode())
    assert refused(f"{head}.{forged_body}.{signature}") is TokenReason.BAD_SIGNATURE
    # Signed with one key's secret, claiming to be the other key.
    impostor = handmade({"alg": "HS256"}, claims(iss=OTHER.sid), KEY.secret.encode())
    assert refused(impostor) is TokenReason.BAD_SIGNATURE
    # A key nobody knows.
    unknown = ApiKey("SK" + "ab" * 16, "u" * 40, ACCOUNT)
    assert refused(mint_token(unknown, "alice", NOW)) is TokenReason.UNKNOWN_KEY
    # kid naming another key than iss.
    kid = handmade({"alg": "HS256", "kid": OTHER.sid}, claims(), KEY.secret.encode())
    assert refused(kid) is TokenReason.UNKNOWN_KEY
    same_kid = handmade({"alg": "HS256", "kid": KEY.sid}, claims(), KEY.secret.encode())
    assert verify_token(same_kid, KEYS, NOW).identity == "alice"


def test_wrong_account() -> None:
    token = handmade({"alg": "HS256"}, claims(sub=OTHER_ACCOUNT), KEY.secret.encode())
    assert refused(token) is TokenReason.WRONG_ACCOUNT
    no_sub = claims()
    del no_sub["sub"]
    assert refused(handmade({"alg": "HS256"}, no_sub, KEY.secret.encode())) is (
        TokenReason.WRONG_ACCOUNT
    )


def test_expiry_and_not_before_with_leeway() -> None:
    token = mint_token(KEY, "alice", NOW, ttl=600)
    assert verify_token(token, KEYS, NOW + 600 + LEEWAY_SECONDS).identity == "alice"
    assert refused(token, NOW + 600 + LEEWAY_SECONDS + 1) is TokenReason.EXPIRED
    assert verify_token(token, KEYS, NOW - LEEWAY_SECONDS).identity == "alice"
    assert refused(token, NOW - LEEWAY_SECONDS - 1) is TokenReason.NOT_YET_VALID


def test_a_revoked_identity_is_refused() -> None:
    token = mint_token(KEY, "alice", NOW)
    revocations = Revocations([Revocation("alice", NOW + 60)])
    with pytest.raises(TokenError) as caught:
        verify_token(token, KEYS, NOW, revocations.is_revoked)
    assert caught.value.reason is TokenReason.REVOKED
    assert verify_token(token, KEYS, NOW + 60, revocations.is_revoked).identity == "alice"
    bob = mint_token(KEY, "bob", NOW)
    assert verify_token(bob, KEYS, NOW, revocations.is_revoked).identity == "bob"


def test_tokens_from_twilio_s_helper_library_verify() -> None:
    token = AccessToken(ACCOUNT, KEY.sid, KEY.secret, identity="alice", ttl=600)
    token.add_grant(VideoGrant(room="standup"))
    text = token.to_jwt()
    assert isinstance(text, str)
    verified = verify_token(text, KEYS, time.time())
    assert verified.identity == "alice"
    assert verified.key == KEY
    assert verified.grants["video"] == {"room": "standup"}
    # Under another key's secret, the same helper's token does not verify.
    forged = AccessToken(ACCOUNT, KEY.sid, OTHER.secret, identity="alice").to_jwt()
    assert refused(forged, time.time()) is TokenReason.BAD_SIGNATURE
    elsewhere = AccessToken(OTHER_ACCOUNT, KEY.sid, KEY.secret, identity="alice").to_jwt()
    assert refused(elsewhere, time.time()) is TokenReason.WRONG_ACCOUNT
    anonymous = AccessToken(ACCOUNT, KEY.sid, KEY.secret).to_jwt()
    assert refused(anonymous, time.time()) is TokenReason.MALFORMED


def test_mint_refuses_bad_identities_and_ttls() -> None:
    for identity in ("", "x" * 257, "tab\there"):
        with pytest.raises(ValueError, match="identity"):
            mint_token(KEY, identity, NOW)
    with pytest.raises(ValueError, match="ttl"):
        mint_token(KEY, "alice", NOW, ttl=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"exp": float("nan")}, {"exp": float("inf")}, {"exp": float("-inf")},
        {"nbf": float("nan")}, {"nbf": float("-inf")}, {"iat": float("nan")},
        {"iat": float("inf")}, {"iat": "yesterday"},
    ],
)  # fmt: skip
def test_time_claims_that_are_not_finite_numbers_are_malformed(bad: dict[str, Any]) -> None:
    # json.dumps writes NaN and Infinity, and PyJWT's parser reads them back (issue 15).
    token = handmade({"alg": "HS256", "typ": "JWT"}, claims(**bad), KEY.secret.encode())
    assert refused(token) is TokenReason.MALFORMED


def test_a_non_finite_expiry_is_401_over_http_not_500() -> None:
    from tests.helpers.token_harness import call, serve_token_api
    from trelay.credentials.token_api import static_context

    context = static_context(KEYS, "turn-secret", ("turn:127.0.0.1:3478",), clock=lambda: NOW)
    for bad in ({"exp": float("inf")}, {"exp": float("nan")}, {"nbf": float("nan")}):
        token = handmade({"alg": "HS256", "typ": "JWT"}, claims(**bad), KEY.secret.encode())
        with serve_token_api(context) as base:
            answer = call("GET", base + "/v1/ice-servers", {"Authorization": f"Bearer {token}"})
        assert (answer.status, answer.body["error"]) == (401, "malformed"), bad
        assert "finite" in answer.body["message"]
