"""HTTP/1.x pieces of the proxy, without sockets.

- `parse`: RequestReader / ResponseReader around llhttp (httptools) with the
  proxy's limits and smuggling checks; RequestHead / ResponseHead.
- `headers`: hop-by-hop removal, X-Forwarded-* and Forwarded, request ids,
  cookies, header blocks.
- `chunked`: body framing decisions and chunk encoding.
- `responses`: status lines and the responses the proxy makes itself.

The socket side lives in `proxy.io.l7` (clients) and `proxy.io.upstream`
(backends); everything here is plain logic, tested without I/O.
"""
from proxy.http1.parse import (  # noqa: F401
    RequestError,
    RequestHead,
    RequestReader,
    ResponseError,
    ResponseHead,
    ResponseReader,
)
