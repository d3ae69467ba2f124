"""The `nice` command: `nice pipeline run | compile | upload | submit | schedule` and the pipeline demo
(`nice demo`) here, every other sub-command handed to the library's `nice.cli.main`.

It lives outside `nice/` because pipelines need kfp and the library never imports it (nor
this package); kfp is imported only when a pipeline command runs, so the library's
sub-commands work from this entry point without kfp installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nice import cli as nice_cli


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline arguments from `--arg key=value` (values parsed as JSON when they parse)."""
    out: dict[str, Any] = {}
    for item in args.arg or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--arg {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if args.config:
        out["config"] = nice_cli.read_overrides(args.config)  # the same overrides as everywhere
    return out


def build_parser() -> argparse.ArgumentParser:
    from pipeline import PIPELINES

    parser = argparse.ArgumentParser(prog="nice pipeline",
                                     description="Run, compile, upload, submit or schedule the Kubeflow pipelines.")
    sub = parser.add_subparsers(dest="action", required=True)
    for name, help_ in (("run", "run locally through kfp.local (steps are subprocesses of this Python)"),
                        ("compile", "write the pipeline as KFP IR YAML"),
                        ("upload", "create the pipeline on a KFP endpoint and a version of this spec (once per "
                                   "distinct spec: uploading it again changes nothing)"),
                        ("submit", "submit one run to a Kubeflow Pipelines endpoint"),
                        ("schedule", "create a recurring run (max_concurrency=1, no catch-up)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("pipeline", choices=sorted(PIPELINES))
        if name != "run":
            p.add_argument("--settings", metavar="FILE",
                           help="JSON object of cluster settings overrides (service_account, gpu, retry, "
                                "timeouts; docs/operations.md)")
        if name in ("run", "submit", "schedule"):
            p.add_argument("--arg", action="append", metavar="KEY=VALUE",
                           help="a pipeline parameter (repeatable), e.g. --arg archive_source=s3://b/p/")
            p.add_argument("--config", metavar="FILE",
                           help="JSON object of NiceConfig overrides, passed as the `config` parameter "
                                "(each step merges it onto its base config, see `nice --help`)")
        if name == "compile":
            p.add_argument("--out", help="default: <pipeline>.yaml")
        if name in ("upload", "submit", "schedule"):
            p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
        if name in ("submit", "schedule"):
            p.add_argument("--experiment", default="nice")
            p.add_argument("--version", metavar="latest|current|ID",
                           help="run an uploaded pipeline version: `latest` on the server, `current` (this "
                                "spec, uploaded if new) or a version id; default: the spec compiled here, inline")
            p.add_argument("--service-account", metavar="NAME",
                           help="Kubernetes service account of the run (default: the settings', nice-pipeline; "
                                "'' for the server's default)")
        if name == "schedule":
            p.add_argument("--cron", required=True, help="5-field cron, e.g. '0 3 * * *' (KFP adds seconds)")
            p.add_argument("--job-name")
    return parser


def pipeline_main(argv: list[str]) -> int:
    """`nice pipeline ...`."""
    from pipeline.settings import read_settings

    args = build_parser().parse_args(argv)
    settings = read_settings(getattr(args, "settings", None))
    if args.action == "compile":
        from pipeline.remote import compile_pipeline

        print(compile_pipeline(args.pipeline, args.out or f"{args.pipeline}.yaml", settings))
        return 0
    if args.action == "upload":
        from pipeline.remote import upload

        print(json.dumps(upload(args.pipeline, args.host, settings)))
        return 0
    arguments = _arguments(args)
    if args.action == "run":
        from pipeline.local import run_local

        run_dir = run_local(args.pipeline, arguments)
        print(json.dumps({"pipeline": args.pipeline, "run_dir": str(run_dir),
                          "artifacts": sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("*/*")
                                              if p.name != "executor_output.json")}, indent=2))
        return 0
    if args.action == "submit":
        from pipeline.remote import submit

        print(json.dumps({"run_id": submit(args.pipeline, args.host, arguments, args.experiment, args.version,
                                           settings, args.service_account)}))
        return 0
    from pipeline.remote import schedule

    print(json.dumps({"recurring_run_id": schedule(args.pipeline, args.host, args.cron, arguments,
                                                   args.experiment, args.job_name, args.version, settings,
                                                   args.service_account)}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`nice demo`: the train-and-compress pipeline through kfp.local, tracked in MLflow."""
    from pipeline.demo import format_report, run_demo

    report = run_demo(dataset=args.dataset, limit=args.limit or 0, config=nice_cli.overrides_from_args(args),
                      workdir=args.workdir)
    print(format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `nice` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = nice_cli.command_of(argv)
    if command == "pipeline":
        rest = argv[argv.index("pipeline") + 1:]
        return nice_cli.guarded(lambda _: pipeline_main(rest), argparse.Namespace())
    if command == "demo":
        args = nice_cli.build_parser().parse_args(argv)
        if not args.direct:
            nice_cli.setup_logging(args)
            return nice_cli.guarded(cmd_demo, args)
    return nice_cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
