"""python manage.py labs list | run SLUG [--config FILE] [--solution] | check | measure | reap
| replay RUN_ID --algorithms a,b,c

``run`` does from a terminal what the lab page does (labs/framework/runner.py): a sandbox,
the config, the traffic, the faults, the recording, the grader. It exits 0 only when the
grader passes (1: it failed, 2: the config was refused, 3: the run itself broke, or a
part of the sandbox or the traffic died during it so it cannot be graded), so a
workshop or CI can run ``labs run SLUG --solution`` for every lab.
"""
from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

EXIT_PASS, EXIT_FAIL, EXIT_REFUSED, EXIT_BROKEN = 0, 1, 2, 3


class Command(BaseCommand):
    help = "Guided failure labs: list them, run one (exit 0 only when its grader passes)."
    requires_system_checks = []  # `labs check` reports lab problems itself

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="every lab with its slug and time scale")
        sub.add_parser("check", help="report labs whose definition is incomplete")
        run = sub.add_parser("run", help="run a lab and grade it")
        run.add_argument("slug")
        src = run.add_mutually_exclusive_group()
        src.add_argument("--config", help="your config (YAML): default the lab's starting one")
        src.add_argument("--solution", action="store_true", help="run the lab's documented fix")
        run.add_argument("--json", action="store_true", help="print the result as JSON")
        run.add_argument("--sandbox", help="sandbox id to use (default: a throwaway one)")
        run.add_argument("--keep", action="store_true", help="leave the sandbox running")
        run.add_argument("--run-dir", help="where the recording and reports go")
        run.add_argument("--run-id", help="the run's id (default: time + random)")
        run.add_argument("--state-dir", help="sandboxes' state dir (default LBLAB_STATE_DIR)")
        run.add_argument("--report", help="also copy report.html and report.json here")
        run.add_argument("--driver", choices=["processes", "containers", "swarm"],
                         default="processes",
                         help="where the sandbox runs (default processes; the site passes "
                         "its own, LBLAB_SANDBOX_DRIVER)")
        run.add_argument("--fallback", choices=["processes", "refuse"], default="processes",
                         help="a lab that driver cannot serve: run it on processes (default) "
                         "or refuse it")
        regrade = sub.add_parser("regrade", help="grade a recorded run again (with answers)")
        regrade.add_argument("run_dir")
        regrade.add_argument("--answers", help="YAML file: the answers (tracing labs)")
        regrade.add_argument("--json", action="store_true")
        rp = sub.add_parser("replay", help="replay a run's traffic under other algorithms "
                            "side by side (labs/framework/replay.py)")
        rp.add_argument("run_id", help="a run id (folder of <state dir>/labruns) or a run dir")
        rp.add_argument("--algorithms", required=True,
                        help="comma-separated, e.g. round_robin,least_outstanding_requests")
        rp.add_argument("--repeat", type=int, default=1,
                        help="replay each algorithm N times at once (determinism check)")
        rp.add_argument("--cost", choices=["backend", "pinned"], default="backend",
                        help="backend (default): same fault schedule and per-request seeds, "
                        "a request costs what its backend charges then; pinned: every backend "
                        "answers each request after its recorded time with its recorded status")
        rp.add_argument("--seed", type=int, default=None,
                        help="seed every lane's balancer draws (random, power_of_two_choices) "
                        "with this; default: one derived from the trace, the same each replay")
        rp.add_argument("--json", action="store_true", help="print the result as JSON")
        rp.add_argument("--out", help="folder for result.json (default <run dir>/replays/ID)")
        rp.add_argument("--state-dir", help="sandboxes' state dir (default LBLAB_STATE_DIR)")
        measure = sub.add_parser("measure", help="start one sandbox; print memory + start time")
        measure.add_argument("--backends", type=int, default=4)
        measure.add_argument("--repeat", type=int, default=3)
        measure.add_argument("--state-dir")
        reap = sub.add_parser("reap", help="stop lab sandboxes idle for --idle seconds")
        reap.add_argument("--idle", type=float, default=None)
        reap.add_argument("--all", action="store_true", help="also stop the labs' Redis")
        reap.add_argument("--state-dir")

    def handle(self, *args, **opts):
        action = opts["action"]
        return getattr(self, f"do_{action}")(opts)

    # -- list / check -----------------------------------------------------------------

    def do_list(self, opts):
        from labs.framework import registry

        for lab in registry.all_labs():
            needs = f"  (needs {', '.join(lab.spec.needs)})" if lab.spec.needs else ""
            self.stdout.write(f"{lab.slug:28} {lab.scale.label:>6}  {lab.title}{needs}")
        for slug, problems in registry.problems().items():
            self.stdout.write(self.style.ERROR(f"{slug:28} INCOMPLETE: {problems[0]}"))

    def do_check(self, opts):
        from labs.framework import registry

        problems = registry.problems()
        for slug, lines in problems.items():
            for line in lines:
                self.stdout.write(f"{slug}: {line}")
        if problems:
            raise SystemExit(1)
        self.stdout.write(f"{len(registry.all_labs())} labs, all complete")

    # -- run ----------------------------------------------------------------------------

    def do_run(self, opts):
        from labs.framework import registry
        from labs.framework.runner import RunFailed, RunOptions, RunRefused, run_lab

        try:
            lab = registry.get(opts["slug"])
        except registry.UnknownLab as exc:
            raise CommandError(str(exc)) from None
        if opts["solution"]:
            text, label = lab.solution_text(), "solution"
        elif opts["config"]:
            try:
                text, label = Path(opts["config"]).read_text(encoding="utf-8"), "config"
            except OSError as exc:
                raise CommandError(f"cannot read {opts['config']}: {exc.strerror}") from None
        else:
            text, label = lab.topology_text(), "start"
        quiet = opts["json"]

        last_phase = [None]

        def progress(status):
            if not quiet and status["phase"] != last_phase[0]:
                last_phase[0] = status["phase"]
                self.stderr.write(f"  [{status['phase']}] {status['message']}")

        options = RunOptions(state_dir=opts.get("state_dir"), sandbox_id=opts.get("sandbox"),
                             keep_sandbox=opts["keep"], run_dir=opts.get("run_dir"),
                             run_id=opts.get("run_id"), progress=progress, label=label,
                             max_sandboxes=getattr(settings, "LBLAB_LABS_MAX_SANDBOXES", 30),
                             driver=_driver(opts), fallback=opts["fallback"])
        if not quiet:
            self.stderr.write(f"{lab.slug}: {lab.title} ({label}, time scale {lab.scale.label})")
        try:
            outcome = run_lab(lab, text, options)
        except RunRefused as exc:
            if quiet:
                self.stdout.write(json.dumps({"slug": lab.slug, "passed": False,
                                              "refused": True, **exc.as_json()}))
            else:
                self.stderr.write("the config was refused:")
                for e in exc.errors:
                    self.stderr.write(f"  {e['path']}: {e['message']}" if e["path"]
                                      else f"  {e['message']}")
            raise SystemExit(EXIT_REFUSED)
        except RunFailed as exc:
            if quiet:
                self.stdout.write(json.dumps({"slug": lab.slug, "passed": False,
                                              "error": str(exc)}))
            else:
                self.stderr.write(f"the run broke: {exc}")
            raise SystemExit(EXIT_BROKEN)
        if opts.get("report"):
            dest = Path(opts["report"])
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("report.html", "report.json"):
                (dest / name).write_bytes((outcome.run_dir / name).read_bytes())
        self._print(lab, outcome, quiet)
        raise SystemExit(_exit(outcome.result))

    def _print(self, lab, outcome, quiet):
        if quiet:
            self.stdout.write(json.dumps({**outcome.to_json(), "run_dir": str(outcome.run_dir)},
                                         default=str))
            return
        r = outcome.result
        style = self.style.SUCCESS if r.passed else self.style.ERROR
        word = "PASS" if r.passed else "FAIL" if r.graded else "CAN'T GRADE"
        self.stdout.write(style(f"{word}: {r.headline}"))
        for line in r.evidence:
            self.stdout.write(f"  {line}")
        sb = outcome.sandbox
        pss = (sb.get("pss_bytes") or {}).get("total")
        driver = (sb.get("placement") or {}).get("driver", "processes")
        self.stdout.write(f"  sandbox {sb.get('id')} ({driver}): started in "
                          f"{sb.get('start_seconds')} s, memory {pss / 1e6 if pss else 0:.0f} "
                          f"MB (PSS); run took {outcome.seconds:.1f} s")
        self.stdout.write(f"  report: {outcome.run_dir / 'report.html'}")

    def do_regrade(self, opts):
        import yaml

        from labs.framework import registry
        from labs.framework.runner import regrade

        run_dir = Path(opts["run_dir"])
        data = json.loads((run_dir / "result.json").read_text())
        lab = registry.get(data["slug"])
        answers = None
        if opts.get("answers"):
            answers = yaml.safe_load(Path(opts["answers"]).read_text())
            answers = (answers.get("lab") or {}).get("answers", answers) if isinstance(
                answers, dict) else answers
        outcome = regrade(lab, run_dir, answers)
        self._print(lab, outcome, opts["json"])
        raise SystemExit(_exit(outcome.result))

    # -- measure / reap ------------------------------------------------------------------

    def do_replay(self, opts):
        from labs.framework import replay, replay_compare, replay_trace
        from labs.sandbox.service import default_state_dir

        state_dir = Path(opts.get("state_dir") or default_state_dir())
        given = Path(opts["run_id"])
        run_dir = given if given.is_dir() else state_dir / "labruns" / opts["run_id"]
        if not run_dir.is_dir():
            raise CommandError(f"no run {opts['run_id']!r} in {state_dir / 'labruns'}: give a "
                               "run id from `labs run` (its report path names it) or a run dir")
        try:
            trace = replay_trace.for_run(run_dir)
            algos = replay.check_algorithms(opts["algorithms"].split(","))
        except (replay_trace.TraceError, replay.ReplayRefused) as exc:
            raise CommandError(str(exc)) from None
        repeat = max(1, opts["repeat"])
        lanes = [a for a in algos for _ in range(repeat)]
        labels = [a if repeat == 1 else f"{a}#{k + 1}" for a in algos for k in range(repeat)]
        out = Path(opts["out"]) if opts.get("out") else replay.replay_dir(run_dir)
        self.stderr.write(f"replaying {len(trace.requests)} requests of run {trace.run_id} "
                          f"({trace.slug}, recorded under {trace.algorithm}) under "
                          f"{', '.join(labels)} (cost: {opts['cost']})")
        if trace.notes:
            self.stderr.write("; ".join(trace.notes))
        try:
            result = replay.Replayer(trace, lanes, state_dir=state_dir, out_dir=out,
                                     labels=labels, cost=opts["cost"],
                                     seed=opts.get("seed")).run()
        except replay.ReplayRefused as exc:
            raise CommandError(str(exc)) from None
        except replay.ReplayFailed as exc:
            self.stderr.write(f"the replay broke: {exc}")
            raise SystemExit(EXIT_BROKEN)
        if opts["json"]:
            self.stdout.write(json.dumps(result, indent=1))
        else:
            self.stdout.write(replay_compare.table(result))
            self.stdout.write(f"result: {out / 'result.json'}")

    def do_measure(self, opts):
        from labs.services.sandboxes import measure_sandbox

        figures = measure_sandbox(opts["backends"], opts["repeat"], opts.get("state_dir"))
        self.stdout.write(json.dumps(figures, indent=1))

    def do_reap(self, opts):
        from labs.services.sandboxes import reap

        stopped = reap(opts.get("idle"), opts["all"], opts.get("state_dir"))
        self.stdout.write(f"stopped: {', '.join(stopped) or 'nothing'}")


def _driver(opts):
    """The sandbox driver ``--driver`` names, set up as the site sets it up; None for
    processes (the runner's own SandboxService, as always)."""
    if opts["driver"] == "processes":
        return None
    from labs.services.sandboxes import service

    return service(opts.get("state_dir"), driver=opts["driver"])


def _exit(result) -> int:
    if not result.graded:
        return EXIT_BROKEN
    return EXIT_PASS if result.passed else EXIT_FAIL
