"""Credential minting: access tokens in, short-lived TURN credentials and ICE servers out.

Owns access tokens (`access_tokens`, HS256 JWTs in Twilio's format), the token API's
routes and request handling (`token_api`, `api_requests`), RFC 7635 ACCESS-TOKEN minting
(`token_crypto`), the `iceServers` lists and TURN REST credentials handed to clients
(`ice_config`) and which ICE URIs a request gets (`ice_uris`: a static list, or
placement in the fleet).
"""
