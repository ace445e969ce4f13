"""Schemathesis hooks for Wedge's API (tests/tests/schemathesis.rs loads them).

A module upload's body is `application/wasm`, which Schemathesis cannot serialize on its
own: generated values are sent as bytes (they are not valid components, so the API must
answer them with a documented 400, never a 5xx).
"""

import schemathesis


@schemathesis.serializer("application/wasm")
def wasm(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode()
