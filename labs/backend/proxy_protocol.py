"""PROXY protocol parsing and building: moved to proxy/proxyproto.py, which the proxy's
listeners use to accept the header too (labs may import proxy, not the other way).
This name stays for the toy backends and their tests."""
from proxy.proxyproto import *  # noqa: F401,F403
from proxy.proxyproto import ProxyHeader, ProxyProtocolError  # noqa: F401
