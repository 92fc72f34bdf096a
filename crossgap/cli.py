"""The ``crossgap`` command line (console script ``crossgap = crossgap.cli:main``).

Top-level subcommands live in :data:`COMMANDS` (name -> :class:`Command`); to add one,
write a ``configure(parser)`` function that adds its arguments and sets
``parser.set_defaults(func=handler)`` with ``handler(args) -> int``, and add an entry.
Handlers only parse arguments and call library functions; they print reports to
stdout and messages through :mod:`logging`.

Currently::

    crossgap datasets list
    crossgap datasets check --dataroot DIR [NAME ...] [--no-check-images] [--truncated-images MODE] [--json]
                            [--strict]
    crossgap datasets prepare NAME --dataroot DIR --out manifest.parquet [--skip-corrupt] [--no-check-images]
                              [--truncated-images load|skip|fail]
    crossgap datasets check|prepare NAME --params params.yaml ...   (a datasets: entry, options included)
    crossgap datasets init {imagefolder,captions,wds} PATH [--name NAME] [--set KEY=VALUE] [--append params.yaml]
    crossgap datasets prepare-text MANIFEST --out OUT [--strategy truncate|summaries|llm] [...]
    crossgap import-reference RUN_DIR --dataset D --model M (--tag TAG | --out FILE) [--set S] [...]
    crossgap report RESULTS_DIR --out DIR [--methods TASK=M1,M2 ...] [--resamples N] [--bootstrap-seed S]
                    [--inversion-seed S]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from crossgap import cli_datasets
from crossgap.config import schema_default

log = logging.getLogger("crossgap.cli")

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help and the function that configures its parser."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]


# --------------------------------------------------------------------------- import-reference


def _reference_model_spec(args: argparse.Namespace) -> dict:
    """The ``models:`` entry of ``--model`` in ``--params``, or one built from ``--architecture`` etc."""
    if args.architecture:
        return {k: v for k, v in (("architecture", args.architecture), ("pretrained", args.pretrained),
                                  ("backend", args.backend)) if v is not None}
    import yaml

    try:
        models = (yaml.safe_load(open(args.params, encoding="utf-8")) or {}).get("models") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ValueError(f"{args.params}: cannot read its 'models:' mapping ({exc})") from exc
    if args.model not in models:
        raise ValueError(f"{args.params}: no models entry {args.model!r} (entries: {sorted(models)}); "
                         "or give --architecture [--pretrained] [--backend]")
    from crossgap.config import model_load_spec

    return model_load_spec(models[args.model], args.model)  # what the workflow loads (pretrain: its checkpoint)


def _import_reference(args: argparse.Namespace) -> int:
    from crossgap.datasets import DatasetError
    from crossgap.interop import ReferenceImportError, import_reference
    from crossgap.safe_pickle import UnsafePickleError

    try:
        names_map = json.loads(open(args.names_map, encoding="utf-8").read()) if args.names_map else None
        path, fs = import_reference(
            args.run_dir, manifest=args.manifest or f"{args.data_dir}/manifests/{args.dataset}.parquet",
            dataset=args.dataset, model_slug=args.model, model_spec=_reference_model_spec(args),
            inverted=args.set, tag=args.tag, out=args.out, data_dir=args.data_dir, naming=args.naming,
            names_map=names_map,
        )
    except (ReferenceImportError, UnsafePickleError, DatasetError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    source = fs.meta["imported_from"]
    print(f"wrote {path}: {len(fs.ids)} {fs.meta['kind']} inversions of set {source['set']!r} "
          f"(naming {source['naming']!r}, {source['reference_rows']} reference rows)")
    return 0


def _configure_import_reference(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a reference run folder: data/{oti,ovi}_pseudo_tokens/<dataset>/<split>/<exp_name>")
    p.add_argument("--dataset", required=True, help="the dataset's slug in params (output path, metadata)")
    p.add_argument("--model", required=True, help="the model's slug in params (output path, model entry)")
    p.add_argument("--manifest", default=None,
                   help="the dataset's manifest (default <data-dir>/manifests/<dataset>.parquet)")
    p.add_argument("--set", default=None, help="inverted set: a split for OTI, queries|classnames for OVI (default: "
                   "OTI the image-retrieval query split, OVI classnames if the run used class names)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tag",
                       help="file under <data-dir>/inversion/<dataset>/<model>/<method>-<tag>/<set>.safetensors")
    where.add_argument("--out", help="explicit output file")
    p.add_argument("--data-dir", default="data", help="the pipeline's data folder (default: data)")
    p.add_argument("--params", default="params.yaml", help="params file holding the --model entry")
    p.add_argument("--architecture", default=None, help="load this architecture instead of the params entry")
    p.add_argument("--pretrained", default=None, help="with --architecture: tag or checkpoint path")
    p.add_argument("--backend", default=None, help="with --architecture: openai | open_clip | slip")
    p.add_argument("--naming", default="auto", help="how reference names map to manifest rows (crossgap.interop; "
                   "auto tries each: reference ids of COCO/Flickr30k/nocaps, DASSL names, stems, keys, texts)")
    p.add_argument("--names-map", default=None, help="JSON file {reference name: crossgap id} instead of --naming")
    p.set_defaults(func=_import_reference)


# --------------------------------------------------------------------------- report


def _parse_methods(items: Sequence[str]) -> dict[str, list[str]] | None:
    """``["image_retrieval=oti,pca_text", ...]`` → ``{task: [methods]}`` (``ValueError`` naming a bad item)."""
    from crossgap.methods import TASK_METHODS

    out: dict[str, list[str]] = {}
    for item in items:
        task, sep, names = item.partition("=")
        if not sep or task not in TASK_METHODS:
            raise ValueError(f"--methods {item!r}: expected TASK=M1,M2 with TASK one of {sorted(TASK_METHODS)}")
        unknown = [m for m in names.split(",") if m and m not in TASK_METHODS[task]]
        if unknown:
            raise ValueError(f"--methods {item!r}: {unknown} not methods of {task} ({list(TASK_METHODS[task])})")
        out[task] = [m for m in names.split(",") if m]
    return out or None


def _report(args: argparse.Namespace) -> int:
    import time

    from crossgap.steps.report_folder import report_from_results

    start = time.perf_counter()
    try:
        paths = report_from_results(args.results_dir, args.out, seed=args.inversion_seed,
                                    methods=_parse_methods(args.methods),
                                    bootstrap={"resamples": args.resamples, "seed": args.bootstrap_seed,
                                               "confidence": args.confidence})
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    print(f"wrote {len(paths)} files under {args.out} in {time.perf_counter() - start:.1f} s "
          f"(open {paths['report.html']})")
    return 0


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", help="a results folder (data/results of a run, or a copy of it)")
    p.add_argument("--out", required=True, help="folder for summary, tables, paper tables, verdicts, plots, HTML")
    p.add_argument("--methods", nargs="*", default=[], metavar="TASK=M1,M2",
                   help="methods the paper tables show per task (default: the inversions and training-free methods)")
    p.add_argument("--resamples", type=int, default=schema_default("evaluation.bootstrap.resamples"),
                   help="bootstrap resamples (evaluation.bootstrap.resamples)")
    p.add_argument("--bootstrap-seed", type=int, default=schema_default("evaluation.bootstrap.seed"),
                   help="evaluation.bootstrap.seed")
    p.add_argument("--confidence", type=float, default=schema_default("evaluation.bootstrap.confidence"),
                   help="evaluation.bootstrap.confidence")
    p.add_argument("--inversion-seed", type=int, default=None,
                   help="inversion.seed of the run (results of its other seeds are replicates; default: the one "
                        "seed the inverted results record)")
    p.set_defaults(func=_report)


#: Top-level subcommands; add an entry to add a command.
COMMANDS: dict[str, Command] = {
    "datasets": Command("list, check and prepare datasets", cli_datasets.configure),
    "import-reference": Command("turn a reference-implementation OTI/OVI run into a crossgap inversion file",
                                _configure_import_reference),
    "report": Command("rebuild table, paper tables, verdicts, plots and the HTML report from a results folder",
                      _configure_report),
}


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="crossgap", description="Cross the Gap: modality inversion for CLIP.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-file", default=None, help="also append log messages to this file")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    from crossgap.utils import setup_logging

    level = logging.DEBUG if args.verbose else logging.INFO
    if args.log_file or not logging.getLogger().handlers:  # leave a host's (e.g. pytest's) logging alone
        setup_logging(args.log_file, level)
    logging.getLogger("crossgap").setLevel(level)
    handler: Handler = args.func
    return handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
