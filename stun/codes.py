"""Wire codes of STUN and its extensions: methods, classes, attribute types, error codes.

Owns every number that appears on the wire as an identifier, so that the rest of
the package names them instead of repeating literals.

RFC 8489 §5 (header, magic cookie), §18 (IANA registries), RFC 8656 §18, RFC 6062 §6,
RFC 5780 §7, RFC 7635 §6, RFC 8445 §16.1.
"""

from __future__ import annotations

from enum import IntEnum

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20
TRANSACTION_ID_LENGTH = 12
# RFC 8489 §14.7: CRC-32 of the message XOR'ed with this constant ("STUN").
FINGERPRINT_XOR = 0x5354554E


class Method(IntEnum):
    """STUN methods (RFC 8489 §18.2, RFC 8656 §18, RFC 6062 §6.1)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class MessageClass(IntEnum):
    """The two class bits C1 C0 of the message type (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class AttributeType(IntEnum):
    """Attribute types. Below 0x8000 comprehension-required, above optional (RFC 8489 §14)."""

    # RFC 8489
    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    # RFC 8656 (TURN)
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    RESERVATION_TOKEN = 0x0022
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    # The turnbis drafts' code point, which coturn (and its turnutils_uclient -Z) sends.
    ADDITIONAL_ADDRESS_FAMILY_DRAFT = 0x8032
    ICMP = 0x8004
    # RFC 6062 (TURN TCP relay)
    CONNECTION_ID = 0x002A
    # RFC 5780 (NAT behaviour discovery)
    CHANGE_REQUEST = 0x0003
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C
    # RFC 7635 (third-party authorization)
    ACCESS_TOKEN = 0x001B
    THIRD_PARTY_AUTHORIZATION = 0x802E
    # RFC 8445 (ICE)
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    # RFC 8016 (mobility)
    MOBILITY_TICKET = 0x8030


def is_comprehension_required(attribute_type: int) -> bool:
    """RFC 8489 §14: types 0x0000-0x7FFF must be understood by the receiver."""
    return attribute_type < 0x8000


class ErrorCode(IntEnum):
    """ERROR-CODE values used by STUN and TURN (RFC 8489 §14.8, RFC 8656 §18, RFC 6062)."""

    TRY_ALTERNATE = 300
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    MOBILITY_FORBIDDEN = 405
    UNKNOWN_ATTRIBUTE = 420
    ALLOCATION_MISMATCH = 437
    STALE_NONCE = 438
    ADDRESS_FAMILY_NOT_SUPPORTED = 440
    WRONG_CREDENTIALS = 441
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442
    PEER_ADDRESS_FAMILY_MISMATCH = 443
    CONNECTION_ALREADY_EXISTS = 446
    CONNECTION_TIMEOUT_OR_FAILURE = 447
    ALLOCATION_QUOTA_REACHED = 486
    ROLE_CONFLICT = 487
    SERVER_ERROR = 500
    INSUFFICIENT_CAPACITY = 508

    @property
    def reason(self) -> str:
        """The RFC's recommended reason phrase."""
        return _REASONS[self]


_REASONS = {
    ErrorCode.TRY_ALTERNATE: "Try Alternate",
    ErrorCode.BAD_REQUEST: "Bad Request",
    ErrorCode.UNAUTHORIZED: "Unauthenticated",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.MOBILITY_FORBIDDEN: "Mobility Forbidden",
    ErrorCode.UNKNOWN_ATTRIBUTE: "Unknown Attribute",
    ErrorCode.ALLOCATION_MISMATCH: "Allocation Mismatch",
    ErrorCode.STALE_NONCE: "Stale Nonce",
    ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED: "Address Family not Supported",
    ErrorCode.WRONG_CREDENTIALS: "Wrong Credentials",
    ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL: "Unsupported Transport Protocol",
    ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH: "Peer Address Family Mismatch",
    ErrorCode.CONNECTION_ALREADY_EXISTS: "Connection Already Exists",
    ErrorCode.CONNECTION_TIMEOUT_OR_FAILURE: "Connection Timeout or Failure",
    ErrorCode.ALLOCATION_QUOTA_REACHED: "Allocation Quota Reached",
    ErrorCode.ROLE_CONFLICT: "Role Conflict",
    ErrorCode.SERVER_ERROR: "Server Error",
    ErrorCode.INSUFFICIENT_CAPACITY: "Insufficient Capacity",
}


class AddressFamily(IntEnum):
    """Address family codes of the address attributes (RFC 8489 §14.1, RFC 8656 §14.6)."""

    IPV4 = 0x01
    IPV6 = 0x02


class PasswordAlgorithmId(IntEnum):
    """PASSWORD-ALGORITHM registry (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


class TransportProtocol(IntEnum):
    """REQUESTED-TRANSPORT protocol numbers (RFC 8656 §14.7, RFC 6062 §6.2)."""

    TCP = 6
    UDP = 17
