"""Which client address the proxy believes: trusted networks, trusted hops.

Theory of operation
-------------------
A client's address reaches the proxy three ways, and only one of them is a
fact: the TCP peer of the connection. The other two are claims made by
whoever is in front:

- a PROXY protocol header (v1 text or v2 binary) at the start of the
  connection, sent by an L4 balancer in front (an NLB, HAProxy in tcp mode);
- X-Forwarded-For / Forwarded headers, sent by an L7 proxy in front (an ALB, a
  CDN) - or typed by the client itself.

A claim is worth what its sender is worth. So a listener believes one only
from senders it was told to trust:

- `proxy_protocol.trusted`: networks allowed to open connections at all on a
  listener that expects the header. A connection from anywhere else is
  refused (closed before any byte is read); one from a trusted network must
  start with a valid header, and the address it names becomes the client's
  (for balancing, stickiness, events, X-Forwarded-For, and the PROXY header
  the proxy itself may send on).
- `forwarded.trusted_networks` / `forwarded.trusted_hops` for the headers. The
  rule, `believe()` below:
    * the peer (after any PROXY header) is not trusted: its X-Forwarded-For
      and Forwarded are not believed and not passed on - the backend gets
      only the address the proxy saw. (Before this setting existed they were
      appended to, and an app reading the leftmost entry believed the client.)
    * trusted_networks: from a trusted peer, walk X-Forwarded-For (or
      Forwarded's `for=` when there is no X-Forwarded-For) from the right,
      skipping addresses in the trusted networks; the first one outside them
      is the client (nginx's real_ip_recursive, Envoy's xff_trusted_cidrs).
      Entries left of it were written by the client and are ignored for the
      decision.
    * trusted_hops N: there are exactly N proxies in front; the Nth entry from
      the right is the client (Envoy's xff_num_trusted_hops). Fewer entries
      than N: the leftmost.
    * from a trusted peer, the headers are passed on with the peer appended
      (the chain is the trusted proxies' record, for the backend to audit).

Pure functions; proxy/io/accept.py and proxy/io/l7.py do the I/O.
"""
from __future__ import annotations

import functools
import ipaddress
import re

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> str:
    """A CIDR ('10.0.0.0/8', '::1/128') or one address, in canonical form; ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected a network such as '10.0.0.0/8', got {text!r}")
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not a network: write a CIDR such as '10.0.0.0/8' or "
                         "'192.168.1.7/32', or one address such as '127.0.0.1'") from None


@functools.lru_cache(maxsize=256)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def is_trusted(ip: str, nets: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(address in net for net in nets)


def xff_entries(values: list[str]) -> list[str]:
    """X-Forwarded-For lines -> addresses, left to right (ports and brackets removed)."""
    out = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part:
                out.append(_strip_port(part))
    return out


_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]+)', re.IGNORECASE)


def forwarded_entries(values: list[str]) -> list[str]:
    """Forwarded (RFC 7239) lines -> the `for=` node of each element, left to right."""
    out = []
    for value in values:
        for element in _split_elements(value):
            m = _FOR.search(element)
            if m:
                out.append(_strip_port(m.group(1).strip('"')))
    return out


def _split_elements(value: str) -> list[str]:
    """Split on commas outside quoted strings."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _strip_port(node: str) -> str:
    if node.startswith("["):  # [2001:db8::1]:4711
        return node[1:].partition("]")[0]
    if node.count(":") == 1:  # 192.0.2.43:47011
        return node.partition(":")[0]
    return node


def peer_trusted(peer_ip: str, nets: tuple[Network, ...], hops: int) -> bool:
    """Is the peer's X-Forwarded-For / Forwarded believed at all?"""
    return hops > 0 or (bool(nets) and is_trusted(peer_ip, nets))


def believe(peer_ip: str, xff: list[str], fwd: list[str], nets: tuple[Network, ...],
            hops: int) -> dict:
    """The client address the proxy believes, where it came from and why.

    `xff` / `fwd`: the request's X-Forwarded-For and Forwarded header lines."""
    if not peer_trusted(peer_ip, nets, hops):
        sent = [name for name, values in (("X-Forwarded-For", xff), ("Forwarded", fwd))
                if values]
        why = (f"peer {peer_ip} is not a trusted proxy (forwarded.trusted_networks): its "
               f"{' and '.join(sent)} not believed, not passed on" if sent
               else f"the connection's peer {peer_ip}")
        return {"ip": peer_ip, "from": "peer", "trusted_peer": False, "reason": why,
                "dropped": sent}
    chain, header = xff_entries(xff), "x-forwarded-for"
    if not chain:
        chain, header = forwarded_entries(fwd), "forwarded"
    if not chain:
        return {"ip": peer_ip, "from": "peer", "trusted_peer": True,
                "reason": f"trusted peer {peer_ip} sent no X-Forwarded-For or Forwarded"}
    if hops > 0:
        if len(chain) >= hops:
            client = chain[-hops]
            why = (f"trusted_hops {hops}: entry {hops} from the right of {header} "
                   f"({', '.join(chain)})")
        else:
            client = chain[0]
            why = (f"trusted_hops {hops} but {header} has {len(chain)} "
                   f"entr{'y' if len(chain) == 1 else 'ies'}: the leftmost")
        return _checked(client, header, why, peer_ip)
    for entry in reversed(chain):
        if not is_trusted(entry, nets):
            return _checked(entry, header, f"the rightmost address of {header} outside "
                            f"trusted_networks ({', '.join(chain)})", peer_ip)
    return _checked(chain[0], header, f"every address of {header} is trusted: the leftmost",
                    peer_ip)


def _checked(client: str, header: str, why: str, peer_ip: str) -> dict:
    try:
        ipaddress.ip_address(client)
    except ValueError:
        return {"ip": peer_ip, "from": "peer", "trusted_peer": True,
                "reason": f"{header} names {client!r}, which is not an IP address: the peer"}
    return {"ip": client, "from": header, "trusted_peer": True, "reason": why}
