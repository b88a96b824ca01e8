"""Simulations for the concepts that cannot run on one machine (pure, no I/O).

Two predict-then-observe exercises need more than a learner's sandbox can show: direct
server return (the backend answers the client from an address it shares with the
balancer: that needs routers, not 127.x sockets) and ALB's DNS-based scaling (that needs a
DNS zone, resolvers and hours of client caches). Each gets a small model here that a page
labels "simulation", with every assumption as a parameter the page shows.

`dsr_bytes` counts the IP bytes of one TCP exchange on each path (client → balancer,
balancer → backend, backend → client, and back through the balancer when it relays).
A segment carries at most MSS payload bytes plus a 52-byte IP+TCP header (20 + 20 + 12 of
timestamps); the receiver of a stream of full segments sends one 52-byte ACK for every two
(delayed ACKs); SYN and SYN-ACK are 60 bytes (options), the rest of the handshake and the
close are bare 52-byte segments. Ethernet framing is not counted. What DSR changes is only
which path a packet takes: the client's packets (request, and its ACKs of the response)
still cross the balancer; the backend's packets (response, and its ACKs of the request) go
straight to the client.

`dns_scaling` is a seeded, discrete-time (one-second) model of clients resolving a
balancer's DNS name. The name's answer is the set of node addresses published at that
second; a client caches its answer for the TTL (or, for the share that ignores TTLs, for
`stale_cache_s`), picks an address from its cache for each request, and a request to an
address whose node has stopped fails (the first attempt: many clients then try another
address, turning the error into delay). The same clients facing a balancer with static
addresses (NLB) never see an address change: capacity grows behind the address.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

HEADER_B = 52  # IP 20 + TCP 20 + TCP timestamps 12
SYN_B = 60  # SYN and SYN-ACK carry options (MSS, window scale, SACK, timestamps)


# ---------------------------------------------------------------- direct server return

def stream(payload: int, mss: int = 1448, ack_every: int = 2) -> tuple[int, int, int]:
    """(data bytes on the wire, ACK bytes the receiver sends back, segments) for one stream."""
    if payload <= 0:
        return 0, 0, 0
    segments = math.ceil(payload / mss)
    acks = math.ceil(segments / ack_every)
    return payload + segments * HEADER_B, acks * HEADER_B, segments


def dsr_bytes(request_b: int, response_b: int, mss: int = 1448, ack_every: int = 2,
              tunnel_b: int = 0) -> dict:
    """Bytes on each path of one request/response over a fresh TCP connection.

    tunnel_b: extra bytes per packet on the balancer → backend hop (0 when the balancer
    only rewrites the destination MAC address, 20 for IP-in-IP).
    """
    if request_b < 1 or response_b < 1 or mss < 500 or ack_every < 1 or tunnel_b < 0:
        raise ValueError("request_b and response_b ≥ 1, mss ≥ 500, ack_every ≥ 1, tunnel_b ≥ 0")
    req_data, req_acks, req_segs = stream(request_b, mss, ack_every)
    resp_data, resp_acks, resp_segs = stream(response_b, mss, ack_every)
    # Client's packets: SYN, handshake ACK, the request, its ACKs of the response, FIN, last ACK.
    client_packets = 2 + req_segs + math.ceil(resp_segs / ack_every) + 2
    client_b = SYN_B + HEADER_B + req_data + resp_acks + 2 * HEADER_B
    # Backend's packets: SYN-ACK, the response, its ACKs of the request, FIN (+ ACK of the client's).
    backend_b = SYN_B + resp_data + req_acks + 2 * HEADER_B
    total = client_b + backend_b
    dsr_through = client_b  # only the client's direction crosses the balancer
    relay_through = total  # a relaying balancer (NAT or proxy) carries both directions
    return {
        "request_b": request_b, "response_b": response_b, "mss": mss,
        "client_to_balancer_b": client_b,
        "balancer_to_backend_b": client_b + tunnel_b * client_packets,
        "backend_to_client_b": backend_b,
        "response_acks_b": resp_acks,
        "request_acks_b": req_acks,
        "total_b": total,
        "dsr_balancer_b": dsr_through,
        "relay_balancer_b": relay_through,
        "dsr_share_pct": round(100 * dsr_through / total, 2),
        "saving_factor": round(relay_through / dsr_through, 1),
        "biggest_inbound": max(
            (("request", req_data), ("acks", resp_acks),
             ("handshake", SYN_B + HEADER_B + 2 * HEADER_B)), key=lambda kv: kv[1])[0],
    }


# ---------------------------------------------------------------- DNS-based scaling

@dataclass(frozen=True)
class DnsEvent:
    at: int  # second
    publish: tuple[str, ...]  # the answer from this second on
    stop: tuple[str, ...] = ()  # nodes that stop answering at this second


def dns_scaling(clients: int = 400, ttl_s: int = 60, stale_share: float = 0.05,
                stale_cache_s: int = 3600, duration_s: int = 360,
                events: tuple[DnsEvent, ...] = (), seed: int = 7) -> dict:
    """Per-second requests per address, failures, and who failed, for one DNS timeline.

    Every client sends one request a second. At t=0 each has already resolved the
    initial answer at a uniformly random moment of its cache period, so refreshes are
    spread out (a steady state, not a thundering herd).
    """
    if clients < 1 or ttl_s < 1 or not 0 <= stale_share <= 1 or duration_s < 1:
        raise ValueError("clients ≥ 1, ttl_s ≥ 1, 0 ≤ stale_share ≤ 1, duration_s ≥ 1")
    events = tuple(sorted(events, key=lambda e: e.at))
    if not events or events[0].at != 0:
        raise ValueError("the first event publishes the initial answer at t=0")
    rng = random.Random(seed)
    n_stale = round(clients * stale_share)
    cache_s = [stale_cache_s if i < n_stale else ttl_s for i in range(clients)]
    # Next refresh of each client, and its cached answer.
    next_refresh = [rng.randrange(c) for c in cache_s]
    cached = [events[0].publish] * clients
    answer = events[0].publish
    stopped: set[str] = set()
    per_second: list[dict[str, int]] = []
    failed_by: list[int] = [0] * clients
    failures_per_second: list[int] = []
    refreshes: list[list[int]] = [[] for _ in range(clients)]
    ev = 0
    for t in range(duration_s):
        while ev < len(events) and events[ev].at == t:
            answer = events[ev].publish
            stopped |= set(events[ev].stop)
            ev += 1
        counts: dict[str, int] = {}
        fails = 0
        for i in range(clients):
            if t >= next_refresh[i]:
                cached[i] = answer
                next_refresh[i] = t + cache_s[i]
                refreshes[i].append(t)
            address = cached[i][rng.randrange(len(cached[i]))]
            counts[address] = counts.get(address, 0) + 1
            if address in stopped:
                fails += 1
                failed_by[i] += 1
        per_second.append(counts)
        failures_per_second.append(fails)
    return {"per_second": per_second, "failures": failures_per_second,
            "failed_clients": [i for i, n in enumerate(failed_by) if n],
            "stale_clients": list(range(n_stale)), "clients": clients,
            "refreshes": refreshes}


def share(per_second: list[dict[str, int]], addresses: set[str], t0: int, t1: int) -> float:
    """Percentage of the requests sent in [t0, t1) that went to these addresses."""
    hit = sum(c.get(a, 0) for c in per_second[t0:t1] for a in addresses)
    total = sum(sum(c.values()) for c in per_second[t0:t1])
    return round(100 * hit / total, 1) if total else 0.0


def alb_vs_nlb(clients: int = 400, ttl_s: int = 60, stale_share: float = 0.05,
               stale_cache_s: int = 3600, scale_at: int = 60, retire_at: int = 180,
               stop_after_s: int = 60, seed: int = 7) -> dict:
    """The exercise's story: scale out from 2 nodes to 4, then replace one old node.

    ALB-like: each node has its own address, published under the name with a TTL; the
    replaced node's address leaves the answer at retire_at and the node stops
    stop_after_s later. NLB-like: one static address per zone; the same scale-out and
    replacement happen behind it, so clients never notice.
    """
    old, new = ("10.0.1.11", "10.0.2.12"), ("10.0.1.13", "10.0.2.14")
    end = retire_at + stop_after_s + 120
    alb = dns_scaling(clients, ttl_s, stale_share, stale_cache_s, end, (
        DnsEvent(0, old),
        DnsEvent(scale_at, old + new),
        DnsEvent(retire_at, old[1:] + new),
        DnsEvent(retire_at + stop_after_s, old[1:] + new, stop=(old[0],)),
    ), seed)
    nlb = dns_scaling(clients, ttl_s, stale_share, stale_cache_s, end, (
        DnsEvent(0, ("192.0.2.10", "192.0.2.20")),
    ), seed)
    ps = alb["per_second"]
    # Seconds from the scale-out until the last TTL-respecting client has the new answer.
    stale = set(alb["stale_clients"])
    settle = max(next(t for t in alb["refreshes"][i] if t >= scale_at) - scale_at
                 for i in range(clients) if i not in stale)
    dead = retire_at + stop_after_s
    failed = sum(alb["failures"][dead:])
    sent_after = sum(sum(c.values()) for c in ps[dead:])
    failed_clients = set(alb["failed_clients"])
    if not failed_clients:
        who = "none"
    elif failed_clients <= stale:
        who = "stale"
    else:
        who = "all"
    return {
        "new_share_30s": share(ps, set(new), scale_at + 29, scale_at + 30),
        "new_share_after_ttl": share(ps, set(new), scale_at + ttl_s + 10, scale_at + ttl_s + 40),
        "settle_s": settle,
        "failed_alb": failed,
        "failed_alb_pct": round(100 * failed / sent_after, 2) if sent_after else 0.0,
        "failed_nlb": sum(nlb["failures"]),
        "who_failed": who,
        "timeline": [{"t": t, "new_pct": share(ps, set(new), t, t + 1),
                      "failed": alb["failures"][t]} for t in range(0, end, 10)],
        "params": {"clients": clients, "ttl_s": ttl_s, "stale_share": stale_share,
                   "stale_cache_s": stale_cache_s, "scale_at": scale_at,
                   "retire_at": retire_at, "stop_after_s": stop_after_s, "seed": seed},
    }



# ---------------------------------------------------------------- balls into bins

def _busiest(bins: int, balls: int, choices: int, rng: random.Random) -> int:
    load = [0] * bins
    for _ in range(balls):
        if choices == 1:
            i = rng.randrange(bins)
        else:
            i = min((rng.randrange(bins) for _ in range(choices)), key=load.__getitem__)
        load[i] += 1
    return max(load)


def balls_into_bins(bins: int = 1000, balls: int = 1000, trials: int = 51, seed: int = 11) -> dict:
    """Median (over trials) of the busiest backend's count: random, two and three choices.

    Each ball is a request placed at once and never finishing (the static case the theorem
    is about): random picks one backend; d choices pick d at random and take the one with
    the fewest so far.
    """
    if bins < 2 or balls < 1 or not 1 <= trials <= 501:
        raise ValueError("bins ≥ 2, balls ≥ 1, 1 ≤ trials ≤ 501")
    rng = random.Random(seed)
    out = {}
    for name, d in (("max_random", 1), ("max_two", 2), ("max_three", 3)):
        runs = sorted(_busiest(bins, balls, d, rng) for _ in range(trials))
        out[name] = runs[len(runs) // 2]
        out[name + "_range"] = f"{runs[0]}–{runs[-1]}"
    out["mean"] = round(balls / bins, 2)
    return out


# ---------------------------------------------------------------- Maglev vs modulo

def maglev_disruption(backends: int = 10, keys: int = 20000, table_size: int = 65537) -> dict:
    """Share of keys that change backend when the last of `backends` leaves.

    Uses the proxy's own Maglev table (proxy.balancers.maglev.build_table) and hash
    (proxy.balancers.hashing.stable_hash), so the numbers are LBLab's; modulo is
    hash % n as ip_hash does.
    """
    from proxy.balancers.hashing import stable_hash
    from proxy.balancers.maglev import build_table

    if not 2 <= backends <= 100 or not 100 <= keys <= 200_000:
        raise ValueError("2 ≤ backends ≤ 100, 100 ≤ keys ≤ 200000")
    names = [f"b{i}" for i in range(1, backends + 1)]
    gone = names[-1]
    before = build_table([(n, 1) for n in names], table_size)
    after = build_table([(n, 1) for n in names[:-1]], table_size)
    hashes = [stable_hash(f"client-{k}") for k in range(keys)]
    mod_moved = sum(1 for h in hashes if names[h % backends] != names[:-1][h % (backends - 1)])
    owners = [(before[h % len(before)], after[h % len(after)]) for h in hashes]
    on_gone = sum(1 for b, _ in owners if b == gone)
    others_moved = sum(1 for b, a in owners if b != gone and a != b)
    slots = [before.count(n) for n in names]
    return {
        "modulo_moved_pct": round(100 * mod_moved / keys, 1),
        "maglev_moved_pct": round(100 * (on_gone + others_moved) / keys, 1),
        "maglev_gone_share_pct": round(100 * on_gone / keys, 1),
        "maglev_others_moved_pct": round(100 * others_moved / keys, 2),
        "maglev_slot_spread": max(slots) - min(slots),
    }


# ---------------------------------------------------------------- thresholds and flapping

def flapping(fail_rate: float = 0.2, interval_s: float = 5.0, duration_s: int = 3600,
             healthy_threshold: int = 1, unhealthy_threshold: int = 1, seed: int = 5) -> dict:
    """A backend whose health probes fail at random (independently, `fail_rate` of them),
    run through the proxy's own health state machine (proxy.health.table.apply_probe).

    The backend starts healthy; every probe result is counted as the proxy counts it. Returns
    how often its state flips and the share of the time it is out of rotation.
    """
    from proxy.health.table import HEALTHY, Counters, apply_probe

    if not 0 <= fail_rate <= 1 or interval_s <= 0 or duration_s < interval_s \
            or healthy_threshold < 1 or unhealthy_threshold < 1:
        raise ValueError("0 ≤ fail_rate ≤ 1, interval_s > 0, duration_s ≥ interval_s, "
                         "thresholds ≥ 1")
    rng = random.Random(seed)
    probes = int(duration_s // interval_s)
    health, counters = HEALTHY, Counters()
    flips = out = 0
    for _ in range(probes):
        ok = rng.random() >= fail_rate
        counters, step = apply_probe(counters, health, ok, "simulated probe",
                                     healthy_threshold, unhealthy_threshold)
        if step is not None:
            health = step.target
            flips += 1
        out += health != HEALTHY
    return {"probes": probes, "flips": flips, "flips_per_hour": round(flips * 3600 / duration_s),
            "out_pct": round(100 * out / probes, 1)}
