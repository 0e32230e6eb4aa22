"""Source text for the user projects the plugin tests write and run in a subprocess.

`CALL_WITHOUT_TRELAY` is the application code of those projects: an aioice call that
knows nothing about TURN (the `relay_only` marker forces it through the relay), with
`assert_relayed` on both ends. It needs `asyncio`, `aioice`, `PAYLOAD`, `connect_pair`
and `assert_relayed` (from `trelay.icekit`) in the module it is pasted into.
"""

CALL_WITHOUT_TRELAY = """
async def call_without_trelay():
    \"\"\"Application code: it knows nothing about TURN.\"\"\"
    left = aioice.Connection(ice_controlling=True, use_ipv6=False)
    right = aioice.Connection(ice_controlling=False, use_ipv6=False)
    try:
        await connect_pair(left, right, 20.0)
        await left.send(PAYLOAD)
        assert await asyncio.wait_for(right.recv(), 20.0) == PAYLOAD
        assert_relayed(left)
        assert_relayed(right)
    finally:
        await left.close()
        await right.close()
"""
