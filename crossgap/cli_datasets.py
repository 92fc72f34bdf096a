"""``crossgap datasets ...``: the subcommands of :mod:`crossgap.cli` that list, check, prepare and
configure datasets (:func:`configure` sets up the ``datasets`` parser).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Sequence

log = logging.getLogger("crossgap.cli")


def _datasets_list(args: argparse.Namespace) -> int:
    from crossgap.datasets import get_adapter, list_datasets

    print(f"{'dataset':<16} {'folder':<16} {'classes':>7}  {'expected sizes':<40} tasks")
    for slug in list_datasets():
        a = get_adapter(slug)
        sizes = ", ".join(f"{k} {v}" for k, v in a.expected_sizes.items()) or "(not fixed)"
        tasks = ", ".join(t for t, spec in a.protocol.items() if spec is not None)
        print(f"{slug:<16} {a.folder + '/':<16} {a.num_classes or '-':>7}  {sizes:<40} {tasks}")
    return 0


def _truncated_mode(args: argparse.Namespace) -> str:
    """``--truncated-images``, checked against the modes of :mod:`crossgap.datasets.images` (ValueError)."""
    from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES, truncated_policy

    return truncated_policy(args.truncated_images or DEFAULT_TRUNCATED_IMAGES).name


def _targets(args: argparse.Namespace, names: Sequence[str] | None) -> list[tuple[str, object, str]]:
    """``(name, configured adapter, dataroot)`` of the ``datasets:`` entries of ``--params`` (all, or ``names``)."""
    import yaml

    from crossgap.datasets import DatasetError, adapter_for

    try:
        entries = (yaml.safe_load(open(args.params, encoding="utf-8")) or {}).get("datasets") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise DatasetError(f"{args.params}: cannot read its 'datasets:' mapping ({exc})") from exc
    unknown = [n for n in names or [] if n not in entries]
    if unknown:
        raise DatasetError(f"{args.params}: no datasets entry {unknown}; entries: {sorted(entries)}")
    return [(n, adapter_for(entries[n], n), entries[n]["dataroot"]) for n in (names or entries)]


def _datasets_check(args: argparse.Namespace) -> int:
    from crossgap.datasets import DatasetError, check_dataset, get_adapter, list_datasets

    if not (args.params or args.dataroot):
        log.error("give --dataroot DIR (registered datasets) or --params params.yaml (its datasets: entries)")
        return 2

    try:
        targets = _targets(args, args.names or None) if args.params else [
            (n, get_adapter(n), args.dataroot) for n in (args.names or list_datasets())]
        args.truncated_images = _truncated_mode(args)
    except (DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    reports = []
    for name, adapter, dataroot in targets:
        reports.append(check_dataset(adapter, dataroot, check_images=args.check_images, workers=args.workers,
                                     truncated_images=args.truncated_images))
        reports[-1].dataset = name
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        print("\n".join(r.format(brief_not_found=not args.names) for r in reports))
        if not args.names:
            found = [r.dataset for r in reports if r.found]
            print(f"\nfound: {', '.join(found) or '(none)'}")
            print(f"not found: {', '.join(r.dataset for r in reports if not r.found) or '(none)'}")
    considered = reports if args.names else [r for r in reports if r.found]
    failed = [r.dataset for r in considered if not r.ok or (args.strict and r.warnings)]
    if failed:
        log.error("dataset check failed for: %s", ", ".join(failed))
        return 1
    return 0


def _datasets_prepare(args: argparse.Namespace) -> int:
    from crossgap.datasets import DatasetError, DatasetIntegrityError, prepare_manifest, skipped_sidecar_path

    try:
        args.truncated_images = _truncated_mode(args)
        entry = {"adapter": args.name, "dataroot": args.dataroot}
        if args.params:
            import yaml

            entry = ((yaml.safe_load(open(args.params, encoding="utf-8")) or {}).get("datasets") or {}).get(args.name)
            if not isinstance(entry, dict):
                raise DatasetError(f"{args.params}: no datasets entry {args.name!r}")
        if not entry.get("dataroot"):
            raise DatasetError("give --dataroot DIR (a registered dataset) or --params params.yaml (its entry NAME)")
    except (DatasetError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    try:
        df, meta = prepare_manifest(
            entry["adapter"],
            entry["dataroot"],
            args.out,
            skip_corrupt=args.skip_corrupt,
            check_images=args.check_images,
            workers=args.workers,
            truncated_images=args.truncated_images,
            options=entry.get("options"),
            name=args.name if args.params else None,
        )
    except DatasetIntegrityError as exc:
        log.error("%s: %d missing or unreadable file(s); manifest not written", exc.dataset, len(exc.problems))
        for p in exc.problems:
            print(f"{p.kind.upper()} {p.path}  ({p.reason})")
        if any(p.kind != "truncated" for p in exc.problems):
            print("re-run with --skip-corrupt to skip (and record) missing/corrupt files")
        if any(p.kind == "truncated" for p in exc.problems):
            print("re-run with --truncated-images load (as the reference) or skip for truncated images")
        return 1
    except DatasetError as exc:
        log.error("%s", exc)
        return 1
    counts = df.groupby(["split", "modality"], sort=False).size()
    print(f"wrote {args.out}: {len(df)} rows, {len(meta['classnames'])} classes")
    truncated = meta["truncated_images"]
    if truncated["count"]:
        print(f"truncated images: {truncated['count']} {truncated['action']} (--truncated-images {truncated['mode']})")
    for (split, modality), n in counts.items():
        print(f"    {split:>8} {modality:<5}: {n}")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} row(s); listed in {skipped_sidecar_path(args.out)}")
    return 0


def _datasets_init(args: argparse.Namespace) -> int:
    from crossgap.datasets import DatasetError
    from crossgap.datasets.init import append_entry, entry_yaml, parse_overrides, propose_entry

    try:
        proposal = propose_entry(args.adapter, args.path, name=args.name, overrides=parse_overrides(args.set),
                                 check_images=args.check_images, workers=args.workers,
                                 truncated_images=_truncated_mode(args))
    except (DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    print(proposal.report.format())
    if not proposal.report.ok:
        log.error("%s: the data has problems (above); no entry written", proposal.name)
        return 1
    print("\ndatasets:\n" + entry_yaml(proposal.name, proposal.entry))
    if args.append:
        try:
            append_entry(args.append, proposal.name, proposal.entry)
        except (DatasetError, OSError) as exc:
            log.error("%s", exc)
            return 1
        print(f"appended datasets.{proposal.name} to {args.append}")
    print("next: snakemake --cores 8 --resources gpu=2   (or: crossgap datasets check --params params.yaml "
          f"{proposal.name})")
    return 0


def _configure_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", choices=["imagefolder", "captions", "wds"], help="format of your data")
    p.add_argument("path", help="imagefolder / wds: the dataset folder; captions: the table (csv, tsv, jsonl, parquet)")
    p.add_argument("--name", default=None, help="dataset name in params.yaml (default: from the folder/file name)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set an option (YAML value), e.g. "
                   "--set caption_columns=[caption_1,caption_2] --set gallery_split=null; repeatable")
    p.add_argument("--append", default=None, metavar="PARAMS", help="append the entry to this params.yaml")
    _add_image_options(p)
    p.set_defaults(func=_datasets_init)


def _datasets_prepare_text(args: argparse.Namespace) -> int:
    from crossgap.datasets import DatasetError
    from crossgap.datasets.longtext import LLMConfig, make_counter, prepare_text_manifest

    llm = None
    if args.strategy == "llm":
        if not args.model:
            log.error("--strategy llm needs --model (a local transformers model folder)")
            return 2
        llm = LLMConfig(
            model=args.model,
            max_new_tokens=args.max_new_tokens,
            target_tokens=args.context_length,
            batch_size=args.batch_size,
            cache=args.cache or str(args.out).removesuffix(".parquet") + ".llm_cache.jsonl",
            device=args.device,
            seed=args.seed,
            **({"prompt": args.prompt} if args.prompt else {}),
        )
    if args.strategy == "summaries" and not args.summaries:
        log.error("--strategy summaries needs --summaries FILE")
        return 2
    try:
        counter = make_counter(args.tokenizer, args.words_per_token)
        df, meta = prepare_text_manifest(
            args.manifest,
            args.out,
            args.strategy,
            context_length=args.context_length,
            special_tokens=args.special_tokens,
            counter=counter,
            splits=args.splits,
            only_long=args.only_long,
            cut=not args.count_only,
            summaries=args.summaries,
            llm=llm,
        )
    except (DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    rec = meta["text_preparation"][-1]
    approx = " (approximated by words)" if rec["approximate"] else ""
    print(f"wrote {args.out}: {args.strategy} on {rec['n_texts']} text(s) of split(s) {', '.join(rec['splits'])}")
    print(f"    over {rec['token_budget']} tokens{approx}: {rec['n_over_budget']}")
    if "n_cut" in rec:
        print(f"    cut: {rec['n_cut']}")
    if "n_replaced" in rec:
        print(f"    replaced: {rec['n_replaced']}; still over budget: {rec['n_over_budget_after']}")
    return 0


def _configure_prepare_text(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="input manifest (Parquet)")
    p.add_argument("--out", required=True, help="manifest to write with the prepared texts")
    p.add_argument("--strategy", choices=["truncate", "summaries", "llm"], default="truncate")
    p.add_argument("--context-length", type=int, default=77, help="text tower context (CLIP 77, SigLIP 64)")
    p.add_argument("--special-tokens", type=int, default=2, help="context positions taken by start/end tokens")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="'clip' (CLIP BPE), 'hf:<local path>' or 'words' (default: approximate tokens by words)",
    )
    p.add_argument("--words-per-token", type=float, default=0.75, help="word estimate used without a tokenizer")
    p.add_argument("--splits", nargs="+", default=None, help="splits to handle (default: see the strategy)")
    p.add_argument("--only-long", action="store_true", help="only handle texts over the token budget")
    p.add_argument("--count-only", action="store_true", help="truncate: record counts, change no text")
    p.add_argument("--summaries", default=None, help="summaries file: .json, .jsonl, .csv (id,summary) or .pkl")
    p.add_argument("--model", default=None, help="llm: local transformers causal LM folder")
    p.add_argument("--prompt", default=None, help="llm: user prompt with {text} (and optionally {max_tokens}); "
                   "default: the reference implementation's")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=1, help="llm: documents per generate call (1: the reference's)")
    p.add_argument("--seed", type=int, default=0, help="llm: seed of each document's sampling")
    p.add_argument("--cache", default=None, help="llm: JSON-lines cache (default <out stem>.llm_cache.jsonl)")
    p.add_argument("--device", default=None, help="llm: torch device (default: cuda if available)")
    p.set_defaults(func=_datasets_prepare_text)


def _add_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataroot", default=None, help="folder holding one sub-folder per dataset")
    p.add_argument("--params", default=None, help="read adapter, dataroot and options of the named dataset(s) "
                   "from the datasets: entries of this params.yaml instead (your own data)")
    _add_image_options(p)


def _add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-check-images",
        dest="check_images",
        action="store_false",
        help="only check that files exist; do not decode every image",
    )
    p.add_argument("--workers", type=int, default=None, help="threads used to decode images")
    p.add_argument(
        "--truncated-images",
        default=None,
        metavar="{load,skip,fail}",
        help="images PIL decodes only with LOAD_TRUNCATED_IMAGES: load them (the reference's choice), skip "
        "them (recorded like --skip-corrupt) or fail (default: fail; crossgap.datasets.images)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="datasets_command", metavar="{list,check,prepare,init,prepare-text}", required=True)

    p = sub.add_parser("list", help="list registered datasets")
    p.set_defaults(func=_datasets_list)

    p = sub.add_parser("check", help="check that datasets are present, complete and readable")
    p.add_argument("names", nargs="*", help="datasets to check (default: all registered; report which are found)")
    _add_check_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true", help="also fail on warnings (e.g. split size mismatch)")
    p.set_defaults(func=_datasets_check)

    p = sub.add_parser("prepare", help="build a dataset's manifest (Parquet)")
    p.add_argument("name", help="dataset slug (see 'crossgap datasets list')")
    _add_check_options(p)
    p.add_argument("--out", required=True, help="manifest path to write, e.g. data/manifests/<name>.parquet")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip missing/corrupt images instead of failing; they are recorded in the manifest metadata "
        "and in <out stem>.skipped.json",
    )
    p.set_defaults(func=_datasets_prepare)

    _configure_init(sub.add_parser("init", help="check your own data and print (or append) its params.yaml entry"))

    _configure_prepare_text(
        sub.add_parser("prepare-text", help="fit long texts of a manifest to a text tower's context")
    )
