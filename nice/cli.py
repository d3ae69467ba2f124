"""`nice` command line: the library's sub-commands.

Every sub-command that is also a pipeline step calls the same `nice.jobs` function as its
Kubeflow component (train-classifier, train-mask-generator, compress, compress-folder,
ingest) or the same `nice.evaluate` function (evaluate, report). `nice pipeline ...` and the
pipeline demo need kfp and live outside the library: the `nice` console script is
`pipeline.cli:main`, which handles those two and hands everything else to `main` here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from nice.config import CLASSIFIER_ARCHS, GENERATOR_ARCHS, MIXING_MODES, VIEW_POLICIES, NiceConfig, merge_overrides

DESCRIPTION = """NICE: train a classifier and a mask generator, then compress image archives (folders or
s3:// prefixes) into files that keep the classifier's prediction, with a per-image savings
table. Each sub-command runs the same code as its step of the Kubeflow pipelines."""

CONFIG_SEMANTICS = """--config FILE: a JSON object of NiceConfig overrides, e.g. {"search": {"keep": [0.2, 1.0]}}.
It is merged section by section onto the base config, keys it leaves out keep the base's
value, and the flags given on the command line apply on top of it. The base is:
  compress, compress-folder   the model's own config (architecture, gates and mixing belong
                              to the model: overriding them is refused)
  train-mask-generator        the classifier checkpoint's config
  train-classifier            the defaults for the dataset's channels (grey: LeNet, per-pixel
                              gates; colour: ResNet, 8x8 gates, mean-colour background)
  demo                        the grey (MNIST) defaults
An unknown key is an error. Bad command lines and bad data/model combinations print one
line on stderr and exit with status 2."""

# (flag dest, config section, key): the flags that set one config value each.
FLAG_SETTINGS = [
    ("epochs_classifier", "train_classifier", "epochs"), ("epochs", "train_generator", "epochs"),
    ("lam", "train_generator", "lam"), ("mu", "train_generator", "mu"),
    ("target", "train_generator", "target"), ("block", "gates", "block"),
    ("mixing", "mixing", "mode"), ("pool", "mixing", "pool"), ("generator", "generator", "arch"),
    ("format", "codec", "format"), ("quality", "codec", "quality"), ("tau", "guard", "tau"),
    ("width", "classifier", "width"), ("stem", "classifier", "stem"), ("arch", "classifier", "arch"),
    ("view", "classifier", "view"), ("image_size", "classifier", "image_size"),
    ("pre_pool", "generator", "pre_pool"), ("gen_width", "generator", "width"),
    ("rank_weight", "train_generator", "rank_weight"),
    ("stored_epochs", "train_classifier", "stored_epochs"),
    ("device", "train_generator", "device"), ("seed", "train_generator", "seed"),
]


def read_overrides(path: str | Path) -> dict[str, Any]:
    """A `--config` file: a JSON object of (partial) NiceConfig sections."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of config sections, got {type(data).__name__}")
    return data


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The job's config overrides: the `--config` file, then every flag that was given."""
    flags: dict[str, dict[str, Any]] = {}
    for attr, section, key in FLAG_SETTINGS:
        value = getattr(args, attr, None)
        if value is not None:
            flags.setdefault(section, {})[key] = value
    if getattr(args, "format", None):
        # the search (view-sized and native) honours the container asked for
        flags.setdefault("search", {}).update(formats=[args.format], native_formats=[args.format], native_fallback=[])
    if getattr(args, "keep_metadata", False):
        flags.setdefault("codec", {})["strip_metadata"] = False
    if getattr(args, "fixed", False) or getattr(args, "quality", None) is not None or getattr(args, "tau", None) is not None:
        flags.setdefault("search", {})["enabled"] = False  # a fixed quality / tau means the fixed path
    path = getattr(args, "config", None)
    return merge_overrides(read_overrides(path) if path else {}, flags)


def job_config(args: argparse.Namespace, base: NiceConfig | None = None) -> NiceConfig:
    """`base` (default: the grey defaults) with the `--config` file and the flags applied."""
    return (base or NiceConfig()).with_overrides(overrides_from_args(args))


def _add_config_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="JSON object of NiceConfig overrides merged onto the base config; flags apply on top "
                        "(see `nice --help`)")


def _add_config(p: argparse.ArgumentParser, train: bool = False, codec: bool = False) -> None:
    _add_config_file(p)
    if train:
        p.add_argument("--epochs", type=int, help="mask-generator epochs")
        p.add_argument("--lam", type=float, help="lambda: weight of the expected-L0 penalty")
        p.add_argument("--mu", type=float, help="weight of the TV smoothness penalty")
        p.add_argument("--target", choices=["prediction", "label"])
        p.add_argument("--block", type=int, help="gate block size b (power of two)")
        p.add_argument("--mixing", choices=list(MIXING_MODES))
        p.add_argument("--pool", type=int, help="background block size k for lowres mixing")
        p.add_argument("--generator", choices=list(GENERATOR_ARCHS),
                       help="conv; features (a head on the classifier's own features: ResNet, LeNet); reference")
        p.add_argument("--gen-width", type=int, help="conv generator width")
        p.add_argument("--pre-pool", type=int, help="conv generator: average-pool the input by this factor first")
        p.add_argument("--stored-epochs", type=int,
                       help="then fine-tune the classifier on stored images for this many epochs (0 = off; default 1)")
        p.add_argument("--rank-weight", type=float,
                       help="weight of the rank loss (trains the top-k ranking the per-image search uses; "
                            "0 = off; default 1 for grey, 0 for colour models)")
        p.add_argument("--device", help="auto | cpu | cuda[:N]")
        p.add_argument("--seed", type=int)
    if codec:
        p.add_argument("--format", choices=["source", "png", "jpeg", "webp", "avif"],
                       help="output container (default: WebP, chosen per image by the search)")
        p.add_argument("--fixed", action="store_true",
                       help="the fixed path: the mask at tau and one codec setting, guard retries with denser "
                            "masks (faster, larger files) instead of the per-image operating-point search")
        p.add_argument("--quality", type=int, help="fixed path: this quality (implies --fixed)")
        p.add_argument("--tau", type=float, help="fixed path: binarisation threshold of the gates (implies --fixed)")
        p.add_argument("--keep-metadata", action="store_true",
                       help="keep the source's EXIF (orientation reset, no thumbnail); the ICC profile is always kept")


def cmd_data(args: argparse.Namespace) -> int:
    from nice.data.mnist import DatasetNotFound, locate

    names = ["mnist", "fashion-mnist"] if args.dataset == "all" else [args.dataset]
    status = 0
    for name in names:
        try:
            print(f"{name}: {locate(name, download=not args.offline)}")
        except DatasetNotFound as exc:
            print(f"{name}: not available ({exc})", file=sys.stderr)
            status = 0 if args.dataset == "all" and name != "mnist" else 1
    return status


def _print(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2, default=str))


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from nice.jobs import train_classifier_step

    _print(train_classifier_step(args.dataset, args.out, overrides_from_args(args),
                                 weights=str(args.classifier_weights) if args.classifier_weights else None))
    return 0


def cmd_train_mask_generator(args: argparse.Namespace) -> int:
    from nice.jobs import train_mask_generator_step

    _print(train_mask_generator_step(args.dataset, args.classifier, args.out, overrides_from_args(args)))
    return 0


def cmd_compress_folder(args: argparse.Namespace) -> int:
    from nice.jobs import compress_step

    # The same archive run as `compress`, between two local folders.
    _print(compress_step(str(args.src), str(args.dst), args.model, overrides=overrides_from_args(args),
                         threads=args.threads, batch_size=args.batch_size, workers=args.workers, wait=args.wait,
                         lease_seconds=args.lease_seconds, savings=str(args.savings) if args.savings else None))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from nice.jobs import compress_step, dry_run_step

    overrides = overrides_from_args(args)
    if args.dry_run:
        _print(dry_run_step(args.src, args.model, overrides, sample=args.sample, threads=args.threads,
                            endpoint_url=args.endpoint_url))
        return 0
    _print(compress_step(args.src, args.dst, args.model, overrides=overrides, threads=args.threads,
                         endpoint_url=args.endpoint_url, shard_size=args.shard_size, batch_size=args.batch_size,
                         workers=args.workers, io_threads=args.io_threads, since_last=args.since_last, reprocess=args.reprocess or "",
                         reprocess_limit=args.reprocess_limit, wait=args.wait, lease_seconds=args.lease_seconds,
                         savings=str(args.savings) if args.savings else None))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from nice.jobs import ingest_step

    _print(ingest_step(args.source, args.out, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                       seed=args.seed or 0, size=args.size, limit=args.limit, endpoint_url=args.endpoint_url))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The library-only demo (`--direct`); the pipeline demo is `pipeline.cli`'s."""
    if not args.direct:
        raise UsageError("the pipeline demo needs kfp and runs from the `nice` command (`nice demo`); "
                         "`--direct` runs the library-only demo")
    from nice.demo import format_summary, run_demo
    from nice.paths import nice_home

    if args.dataset not in ("mnist", "fashion-mnist"):
        raise UsageError(f"--direct runs on mnist or fashion-mnist; the {args.dataset} demo is the pipeline's "
                         f"(`nice demo --dataset {args.dataset}`)")
    cfg = job_config(args)
    workdir = Path(args.workdir) if args.workdir else nice_home() / "demo" / cfg.hash(training=True)
    res = run_demo(workdir, cfg, dataset=args.dataset, limit_test=args.limit, limit_train=args.limit_train,
                   reuse=not args.retrain)
    print(format_summary(res))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nice.bundle import resolve_model
    from nice.device import configure_threads
    from nice.jobs import StepContext, evaluate_step

    configure_threads(args.threads)
    ctx = StepContext()
    if not args.no_track:
        from nice.tracking import Tracker

        ctx = StepContext(Tracker())
    res = evaluate_step(resolve_model(args.model), args.dataset, args.out, ctx, limit=args.limit or None,
                        explain_limit=args.explain_limit, overrides=read_overrides(args.config) if args.config else None)
    print("\n".join(res["verdicts"]))
    print(json.dumps({"report_html": res["report_html"], "report_md": res["report_md"],
                      "saving_vs_best": res["saving_vs_best"], "seconds": round(res["seconds"], 1),
                      "mlflow_run_id": res["mlflow_run_id"]}, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nice.bundle import resolve_model
    from nice.evaluate.run import evaluate_savings

    res = evaluate_savings(args.savings, args.source, resolve_model(args.model), args.out, sample=args.sample)
    print("\n".join(res["gates"]["reasons"]))
    print(json.dumps({"report": res["report"], "bytes_ratio": res["metrics"]["bytes_ratio"],
                      "accuracy_drop_points": res["metrics"]["accuracy_drop_points"],
                      "by_model": res["by_model"]}, indent=2))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from nice.bundle import resolve_model
    from nice.evaluate.explain import explain_image

    model = resolve_model(args.model)
    status = 0
    for uri in args.images:
        try:
            e = explain_image(model, uri, args.out)
        except (OSError, ValueError) as exc:
            print(json.dumps({"image": uri, "error": str(exc)}))
            status = 1
            continue
        print(json.dumps(e.to_dict()))
    return status


def cmd_champion(args: argparse.Namespace) -> int:
    """Show the `champion` versions, or move the alias (a rollback is a move to an older version)."""
    from nice.tracking import CLASSIFIER_MODEL, GENERATOR_MODEL, Tracker

    tracker = Tracker()
    for name, version in ((GENERATOR_MODEL, args.generator), (CLASSIFIER_MODEL, args.classifier)):
        if version is not None:
            try:
                tracker.client.get_model_version(name, str(version))
            except Exception as exc:  # noqa: BLE001 - MlflowException: say which, exit 2
                raise ValueError(f"{name} has no version {version}") from exc
            tracker.promote(name, str(version))
    print(json.dumps({name: tracker.alias_version(name) for name in (GENERATOR_MODEL, CLASSIFIER_MODEL)}))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on 127.0.0.1 over the same store the pipeline writes to."""
    import subprocess

    from nice.tracking import default_tracking_uri

    uri = args.backend_store_uri or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri}); Ctrl-C stops it", file=sys.stderr)
    # Background job execution is for MLflow's GenAI features; off, the UI starts in seconds.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nice", description=DESCRIPTION, epilog=CONFIG_SEMANTICS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    f = p.add_parser("fetch", help="locate or fetch MNIST / Fashion-MNIST into $NICE_HOME (offline first)")
    f.add_argument("--dataset", default="all", choices=["all", "mnist", "fashion-mnist"])
    f.add_argument("--offline", action="store_true", help="never try the internet download")
    f.set_defaults(func=cmd_data)

    p = sub.add_parser("train-classifier", help="train the classifier to be explained")
    p.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | a `nice ingest` artifact directory")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--epochs-classifier", "--epochs", dest="epochs_classifier", type=int)
    p.add_argument("--width", type=int, help="ResNet width (colour classifiers)")
    p.add_argument("--stem", choices=("conv", "patch"), help="ResNet stem (patch: cheaper, for bulk compression)")
    p.add_argument("--arch", choices=list(CLASSIFIER_ARCHS), help="classifier architecture (torchvision names for your own weights)")
    p.add_argument("--image-size", type=int, help="the view's side in pixels (default: the dataset's size; LeNet 28)")
    p.add_argument("--view", choices=list(VIEW_POLICIES), help="how an image becomes the view (default letterbox)")
    p.add_argument("--classifier-weights", type=Path,
                   help="your own weights for --arch (a state dict, loaded with weights_only=True); fine-tuned "
                        "for --epochs-classifier epochs (0: used as it is)")
    _add_config_file(p)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("train-mask-generator", help="train the NICE mask generator against a frozen classifier")
    p.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | a `nice ingest` artifact directory")
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    _add_config(p, train=True)
    p.set_defaults(func=cmd_train_mask_generator)

    p = sub.add_parser("compress-folder", help="`compress` between two local folders (the same resumable, "
                                               "idempotent archive run; state in DST/_nice/)")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--model", required=True, help="model directory, or an MLflow models:/ or runs:/ URI")
    p.add_argument("--savings", type=Path, help="also write the merged savings Parquet here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the cores, each compressing whole shards (default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in all (0: all cores)")
    _add_lease(p)
    _add_config(p, codec=True)
    p.set_defaults(func=cmd_compress_folder)

    p = sub.add_parser("compress", help="compress an archive (s3://bucket/prefix/ or folder) into another")
    p.add_argument("src")
    p.add_argument("dst", nargs="?", default="")
    p.add_argument("--model", required=True, help="model directory, or an MLflow models:/ or runs:/ URI")
    p.add_argument("--savings", type=Path, help="also write the merged savings Parquet here")
    p.add_argument("--since-last", action="store_true", help="rows only for objects new or changed since the last run "
                   "(outputs made by an older model are counted in the summary, not redone)")
    p.add_argument("--reprocess", choices=["older-models"],
                   help="with --since-last: also redo outputs made by another model, --reprocess-limit a run")
    p.add_argument("--reprocess-limit", dest="reprocess_limit", type=int, default=5000,
                   help="older-model outputs redone per run with --reprocess (default 5000)")
    p.add_argument("--dry-run", action="store_true", help="estimate savings on a sample, write nothing")
    p.add_argument("--sample", type=int, default=200, help="objects sampled by --dry-run")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the cores, each compressing whole shards (default 1)")
    p.add_argument("--io-threads", dest="io_threads", type=int, default=8,
                   help="concurrent downloads/uploads per process")
    p.add_argument("--threads", type=int, default=0, help="torch threads in all (0: all cores)")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    _add_lease(p)
    _add_config(p, codec=True)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("ingest", help="build a versioned Dataset artifact from a source")
    p.add_argument("source", help="mnist | fashion-mnist | mnist-m | scenes | scenes-fashion | folder:PATH | "
                                     "s3://bucket/prefix/")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to (re)write")
    p.add_argument("--size", type=int, default=64, help="mnist-m image size")
    p.add_argument("--limit", type=int, help="builtin sources: first N images per official split")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--endpoint-url")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("demo", help="the train-and-compress pipeline on MNIST (kfp.local, local S3, MLflow; "
                                    "needs the `nice` command), or with --direct the library alone")
    p.add_argument("--direct", action="store_true",
                   help="skip Kubeflow/MLflow: train and compress a local folder with the library only")
    p.add_argument("--workdir", help="default: $NICE_HOME/demo (with --direct: $NICE_HOME/demo/<config hash>)")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "scenes", "scenes-fashion"),
                   help="the pipeline demo's dataset: MNIST (fast) or scenes (one small object in a native-size "
                        "photo; see the README for its time)")
    p.add_argument("--limit", type=int, help="use only the first N images of each split")
    p.add_argument("--limit-train", dest="limit_train", type=int, help="train on the first N training images")
    p.add_argument("--retrain", action="store_true", help="ignore models from an earlier demo run")
    p.add_argument("--epochs-classifier", dest="epochs_classifier", type=int)
    _add_config(p, train=True, codec=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="NICE vs codec, oracle, downsampling and other-mask baselines; "
                                        "explanation metrics; HTML + Markdown report")
    p.add_argument("--model", required=True, help="model directory or MLflow URI")
    p.add_argument("--dataset", required=True, help="mnist | fashion-mnist | a `nice ingest` artifact | class/file "
                   "folder (any image sizes: off the view's size, methods are compared at native size)")
    p.add_argument("--out", required=True, help="directory for report.html, report.md, benchmark.json, plots")
    p.add_argument("--limit", type=int, default=2000, help="test images (0 = all)")
    p.add_argument("--explain-limit", dest="explain_limit", type=int, default=500,
                   help="images for the explanation metrics (occlusion is the slow one)")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-track", dest="no_track", action="store_true",
                   help="do not log the run to MLflow (default: metrics and tables to MLFLOW_TRACKING_URI "
                        "or the SQLite store under NICE_HOME)")
    p.add_argument("--config", metavar="FILE", help="JSON object of overrides of how the model compresses "
                   "(search, codec, mixing, guard), merged onto its config as `nice compress --config` does")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="report on a compression run from its savings Parquet")
    p.add_argument("--savings", required=True)
    p.add_argument("--source", required=True, help="the run's SRC (folder or s3:// prefix)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sample", type=int, default=400)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("explain", help="explain single images: overlay PNG, density, bytes NICE would store")
    p.add_argument("images", nargs="+", help="local paths or s3:// URIs")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default=".", help="where the overlay PNGs go")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("champion", help="show or move the `champion` alias of the registered models")
    p.add_argument("--generator", type=int, help="make this nice-mask-generator version the champion")
    p.add_argument("--classifier", type=int, help="make this nice-classifier version the champion")
    p.set_defaults(func=cmd_champion)

    p = sub.add_parser("ui", help="open the MLflow UI on 127.0.0.1 over the NICE tracking store")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///$NICE_HOME/mlflow.db")
    p.set_defaults(func=cmd_ui)

    # Listed for --help; `pipeline.cli` (the `nice` command) handles it before this parser.
    sub.add_parser("pipeline", help="run | compile | submit | schedule the Kubeflow pipelines "
                                    "(`nice pipeline --help`; needs the `nice` command)", add_help=False)
    return parser


def _add_lease(p: argparse.ArgumentParser) -> None:
    from nice.compress.lease import DEFAULT_TTL

    p.add_argument("--wait", action="store_true", help="if another run holds DST's lease, wait for it instead of "
                   "exiting with status 2")
    p.add_argument("--lease-seconds", dest="lease_seconds", type=float, default=DEFAULT_TTL,
                   help=f"DST's lease: renewed every quarter of this; a lease not renewed for this long (a killed "
                        f"run) is taken over and its run resumed (default {DEFAULT_TTL:.0f})")


class UsageError(ValueError):
    """A command line that cannot run as given (exit 2, one line)."""


def command_of(argv: list[str]) -> str | None:
    """The sub-command named on a command line (the first word after the global options)."""
    return next((a for a in argv if not a.startswith("-")), None)


def setup_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def guarded(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command; what stops it from running at all (missing model or data, bad config,
    a dataset the model cannot take, bad URI) is one line on stderr and exit status 2."""
    from nice.compress.lease import LeaseHeld, LeaseLost

    try:
        return int(func(args) or 0)
    except (FileNotFoundError, NotADirectoryError, ValueError, LeaseHeld, LeaseLost) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if command_of(argv) == "pipeline":
        print("error: `nice pipeline` needs kfp and runs from the `nice` command (pipeline.cli), "
              "not from the library's `python -m nice`", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if getattr(args, "command", "") == "compress" and not args.dry_run and not args.dst:
        print("error: DST is required unless --dry-run", file=sys.stderr)
        return 2
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
