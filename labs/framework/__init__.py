"""The guided failure labs' machinery (no Django here except where noted).

definition  a lab folder -> Lab, with every problem found (the system check uses it)
registry    the catalog: every folder under labs/catalog/
runner      sandbox + config + traffic + faults -> recording -> grade (``run_lab``)
recorder    the proxy's event stream, recorded while a lab runs
traffic     the lab's locust process
watchdog    which sandbox parts died during the run (such a run is not graded)
recording   what graders read (pure data)
grading     Result, charts, Mermaid diagrams of the critical moment
report      the run's report as JSON and self-contained HTML
timescale   lab time and production time
services    Redis for shared sessions, another app in place of a toy backend, the lab PKI
netdelay    a TCP relay with latency (a network between the proxy and a backend)
"""
