"""`nice` command line. Each sub-command is a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from nice.config import MIXING_MODES, NiceConfig


def _config(args: argparse.Namespace, base: NiceConfig | None = None) -> NiceConfig:
    """The config file (or `base`, or the defaults) with every flag that was given applied."""
    cfg = NiceConfig.load(args.config) if getattr(args, "config", None) else (base or NiceConfig())
    cfg = NiceConfig.from_dict(cfg.to_dict())  # a copy: never mutate the caller's
    for attr, section, key in [
        ("epochs_classifier", "train_classifier", "epochs"), ("epochs", "train_generator", "epochs"),
        ("lam", "train_generator", "lam"), ("mu", "train_generator", "mu"),
        ("target", "train_generator", "target"), ("block", "gates", "block"),
        ("mixing", "mixing", "mode"), ("pool", "mixing", "pool"), ("generator", "generator", "arch"),
        ("format", "codec", "format"), ("quality", "codec", "quality"), ("tau", "guard", "tau"),
        ("width", "classifier", "width"), ("stem", "classifier", "stem"),
        ("pre_pool", "generator", "pre_pool"), ("gen_width", "generator", "width"),
        ("rank_weight", "train_generator", "rank_weight"),
        ("stored_epochs", "train_classifier", "stored_epochs"),
        ("device", "train_generator", "device"), ("seed", "train_generator", "seed"),
    ]:
        value = getattr(args, attr, None)
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if getattr(args, "format", None):
        cfg.search.formats = (args.format,)  # the search honours the container asked for
    if getattr(args, "fixed", False) or getattr(args, "quality", None) is not None or getattr(args, "tau", None) is not None:
        cfg.search.enabled = False  # a fixed quality / tau means the fixed path
    return NiceConfig.from_dict(cfg.to_dict())  # re-validate after overrides


def _add_config(p: argparse.ArgumentParser, train: bool = False, codec: bool = False) -> None:
    p.add_argument("--config", help="JSON file with a NiceConfig (flags below override it)")
    if train:
        p.add_argument("--epochs", type=int, help="mask-generator epochs")
        p.add_argument("--lam", type=float, help="lambda: weight of the expected-L0 penalty")
        p.add_argument("--mu", type=float, help="weight of the TV smoothness penalty")
        p.add_argument("--target", choices=["prediction", "label"])
        p.add_argument("--block", type=int, help="gate block size b (power of two)")
        p.add_argument("--mixing", choices=list(MIXING_MODES))
        p.add_argument("--pool", type=int, help="background block size k for lowres mixing")
        p.add_argument("--generator", choices=["conv", "reference"])
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


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from nice.checkpoint import save_checkpoint
    from nice.data.sources import BUILTIN, training_data
    from nice.device import configure_threads
    from nice.training.classifier import train_classifier

    from nice.config import colour_default

    configure_threads()
    train, test, names, channels = training_data(args.dataset)
    # Colour sources get the colour defaults (ResNet, 8x8 block gates, mean-colour background).
    cfg = _config(args, base=colour_default() if channels == 3 else None)
    cfg.classifier.num_classes = len(names)
    res = train_classifier(cfg, train, test)
    if args.dataset not in BUILTIN:
        # Artifacts validate on `val` during training; report the held-out test split too.
        from nice.data.arrays import make_loader
        from nice.ingest import DatasetArtifact
        from nice.training.common import predict

        import torch

        preds, labels = predict(res.model, make_loader(DatasetArtifact.open(args.dataset).dataset("test"), 512, False),
                                torch.device("cpu"))
        res.final = {"val_accuracy": res.final.pop("test_accuracy"), **res.final,
                     "test_accuracy": (preds == labels).float().mean().item()}
    save_checkpoint(args.out, "classifier", res.model, cfg, {**res.final, "class_names": names})
    print(json.dumps({"out": str(args.out), **res.final}))
    return 0


def cmd_train_mask_generator(args: argparse.Namespace) -> int:
    from nice.bundle import NiceModel
    from nice.checkpoint import load_classifier
    from nice.data.sources import training_data
    from nice.device import configure_threads
    from nice.training.mask_generator import train_mask_generator
    from nice.training.stored import train_for_storage

    configure_threads()
    classifier, clf_cfg, _ = load_classifier(args.classifier)
    train, val, names, _ = training_data(args.dataset)
    # The classifier's checkpoint config (colour or grey defaults) is the base; flags override.
    cfg = _config(args, base=clf_cfg)
    res = train_mask_generator(cfg, classifier, train, val)
    classifier, stored = train_for_storage(cfg, classifier, res.model, train, val)
    NiceModel(classifier, res.model, cfg, class_names=names).save(args.out, {**res.final, **stored})
    print(json.dumps({"out": str(args.out), **res.final, **stored}))
    return 0


def cmd_compress_folder(args: argparse.Namespace) -> int:
    from nice.bundle import NiceModel
    from nice.compress.folder import compress_folder
    from nice.device import configure_threads

    configure_threads()
    model = NiceModel.load(args.model)
    cfg = _config(args, base=model.config)
    summary = compress_folder(args.src, args.dst, model, cfg, savings=args.savings,
                              batch_size=args.batch_size)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from nice.bundle import resolve_model
    from nice.compress.archive import ArchiveOptions, ArchiveRun, dry_run
    from nice.device import configure_threads
    from nice.storage import open_store

    configure_threads(args.threads)
    model = resolve_model(args.model)
    cfg = _config(args, base=model.config)
    src = open_store(args.src, args.endpoint_url)
    if args.dry_run:
        print(json.dumps(dry_run(src, model, cfg, sample=args.sample), indent=2))
        return 0
    dst = open_store(args.dst, args.endpoint_url)
    if dst.uri.rstrip("/") == src.uri.rstrip("/"):
        print("error: DST must differ from SRC (sources are never modified)", file=sys.stderr)
        return 2
    opts = ArchiveOptions(shard_size=args.shard_size, batch_size=args.batch_size, workers=args.workers,
                          since_last=args.since_last, savings=str(args.savings) if args.savings else None)
    summary = ArchiveRun(src, dst, model, cfg, opts).run()
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from nice.ingest import IngestOptions, ingest

    art = ingest(args.source, args.out, IngestOptions(
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed or 0,
        size=args.size, limit=args.limit, endpoint_url=args.endpoint_url))
    m = art.manifest
    print(json.dumps({k: m[k] for k in ("name", "source", "class_names", "counts", "content_hash",
                                        "channels", "rejects", "duplicates")} | {"path": str(art.path)}, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.direct:
        # The product path: the train-and-compress pipeline through kfp.local, tracked in MLflow.
        from pipeline.demo import format_report, run_demo as run_pipeline_demo

        overrides = json.loads(Path(args.config).read_text()) if args.config else {}
        if args.epochs is not None:
            overrides.setdefault("train_generator", {})["epochs"] = args.epochs
        if args.epochs_classifier is not None:
            overrides.setdefault("train_classifier", {})["epochs"] = args.epochs_classifier
        report = run_pipeline_demo(limit=args.limit or 0, config=overrides,
                                   workdir=args.workdir)
        print(format_report(report))
        return 0
    from nice.demo import format_summary, run_demo
    from nice.paths import nice_home

    cfg = _config(args)
    workdir = Path(args.workdir) if args.workdir else nice_home() / "demo" / cfg.hash()
    res = run_demo(workdir, cfg, limit_test=args.limit, limit_train=args.limit_train, reuse=not args.retrain)
    print(format_summary(res))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nice.bundle import resolve_model
    from nice.device import configure_threads
    from nice.evaluate.suite import evaluate_model

    configure_threads(args.threads)
    res = evaluate_model(resolve_model(args.model), args.dataset, args.out, limit=args.limit or None,
                         explain_limit=args.explain_limit)
    print("\n".join(res["verdicts"]))
    print(json.dumps({"report_html": res["report_html"], "report_md": res["report_md"],
                      "saving_vs_best": res["saving_vs_best"], "seconds": round(res["seconds"], 1)}, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nice.bundle import resolve_model
    from nice.evaluate.run import evaluate_savings

    res = evaluate_savings(args.savings, args.source, resolve_model(args.model), args.out, sample=args.sample)
    print("\n".join(res["gates"]["reasons"]))
    print(json.dumps({"report": res["report"], "bytes_ratio": res["metrics"]["bytes_ratio"],
                      "accuracy_drop_points": res["metrics"]["accuracy_drop_points"]}, indent=2))
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
    parser = argparse.ArgumentParser(prog="nice", description=__doc__)
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
    p.add_argument("--config")
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("train-mask-generator", help="train the NICE mask generator against a frozen classifier")
    p.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | a `nice ingest` artifact directory")
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    _add_config(p, train=True)
    p.set_defaults(func=cmd_train_mask_generator)

    p = sub.add_parser("compress-folder", help="compress a folder of images with a NICE model")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--model", type=Path, required=True, help="NICE model directory")
    p.add_argument("--savings", type=Path, help="also write the merged savings Parquet here")
    p.add_argument("--batch-size", type=int, default=64)
    _add_config(p, codec=True)
    p.set_defaults(func=cmd_compress_folder)

    p = sub.add_parser("compress", help="compress an archive (s3://bucket/prefix/ or folder) into another")
    p.add_argument("src")
    p.add_argument("dst", nargs="?", default="")
    p.add_argument("--model", required=True, help="model directory, or an MLflow models:/ or runs:/ URI")
    p.add_argument("--savings", type=Path, help="also write the merged savings Parquet here")
    p.add_argument("--since-last", action="store_true", help="rows only for objects new or changed since the last run")
    p.add_argument("--dry-run", action="store_true", help="estimate savings on a sample, write nothing")
    p.add_argument("--sample", type=int, default=200, help="objects sampled by --dry-run")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8, help="concurrent downloads/uploads")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    _add_config(p, codec=True)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("ingest", help="build a versioned Dataset artifact from a source")
    p.add_argument("source", help="mnist | fashion-mnist | mnist-m | folder:PATH | s3://bucket/prefix/")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to (re)write")
    p.add_argument("--size", type=int, default=64, help="mnist-m image size")
    p.add_argument("--limit", type=int, help="builtin sources: first N images per official split")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--endpoint-url")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("demo", help="the train-and-compress pipeline on MNIST (kfp.local, local S3, MLflow)")
    p.add_argument("--direct", action="store_true",
                   help="skip Kubeflow/MLflow: train and compress a local folder with the library only")
    p.add_argument("--workdir", help="default: $NICE_HOME/demo (with --direct: $NICE_HOME/demo/<config hash>)")
    p.add_argument("--limit", type=int, help="use only the first N images of each split")
    p.add_argument("--limit-train", dest="limit_train", type=int, help="train on the first N training images")
    p.add_argument("--retrain", action="store_true", help="ignore models from an earlier demo run")
    p.add_argument("--epochs-classifier", dest="epochs_classifier", type=int)
    _add_config(p, train=True, codec=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="NICE vs codec, oracle, downsampling and other-mask baselines; "
                                        "explanation metrics; HTML + Markdown report")
    p.add_argument("--model", required=True, help="model directory or MLflow URI")
    p.add_argument("--dataset", required=True, help="mnist | fashion-mnist | a `nice ingest` artifact | class/file folder")
    p.add_argument("--out", required=True, help="directory for report.html, report.md, benchmark.json, plots")
    p.add_argument("--limit", type=int, default=2000, help="test images (0 = all)")
    p.add_argument("--explain-limit", dest="explain_limit", type=int, default=500,
                   help="images for the explanation metrics (occlusion is the slow one)")
    p.add_argument("--threads", type=int)
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

    sub.add_parser("pipeline", help="run | compile | submit | schedule the Kubeflow pipelines "
                                    "(`nice pipeline --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pipeline"]:
        # Kubeflow lives outside the library: the pipeline CLI has its own parser.
        from pipeline.cli import main as pipeline_main

        try:
            return pipeline_main(argv[1:])
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "command", "") == "compress" and not args.dry_run and not args.dst:
        print("error: DST is required unless --dry-run", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        # The run itself could not proceed (missing model, bad config, bad URI): say why, exit 2.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
