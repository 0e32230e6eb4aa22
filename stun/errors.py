"""The codec's one error type.

Every decoder in `stun` raises only `StunDecodeError`; it carries the STUN error code a
server should answer with (400, or 420 with the unknown attribute types), so the
caller never has to map low-level exceptions (`struct.error`, `IndexError`) by hand.
"""

from __future__ import annotations


class StunDecodeError(ValueError):
    """Bytes that are not a valid STUN message, attribute, ChannelData or stream frame."""

    def __init__(
        self,
        reason: str,
        *,
        error_code: int = 400,
        unknown_attributes: tuple[int, ...] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
        self.unknown_attributes = unknown_attributes
