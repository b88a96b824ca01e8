"""LBLab's load balancer: a standalone asyncio process (never imports Django).

Theory of operation: a YAML file is validated into frozen config objects
(`proxy.config`), from which a `Runtime` (`proxy.runtime`) builds the mutable
state: backend counters and health, one balancer per pool. Listeners
(`proxy.io`) accept clients, match routes, ask the pool's balancer for a
backend and relay; every decision is published as an event (`proxy.events`)
to the access log, the admin stream and the request-lookup store.
"""
