"""``./lab cohort``: a cohort of simulated learners, driven end to end through the real site.

Theory of operation
-------------------
``cli.run`` brings a deployment up (deploy.py: the local lab on processes; compose.yml on
a Docker engine with learners' sandboxes as containers; or the same files as a stack on a
single-node Docker swarm with learners' sandboxes as Swarm services), makes an instructor with
``manage.py createinstructor`` and opens a workshop through the instructor's pages, then
starts N learners at once (learner.py), each one a real HTTP client with its own session
and loopback address plus a real WebSocket: join the workshop, start their sandbox, open
its dashboard and see a request of their own arrive live, run one graded lab with its
starting config (which must fail) and with its documented fix (which must pass), through
the lab pages' run endpoints as the browser does. Then everything is torn down and checked
for leftovers. summary.py (pure) turns what was measured into the table and the one JSON
line printed last.
"""
