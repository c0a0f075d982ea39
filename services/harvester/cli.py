"""`iconicity harvest`: build or update a catalog folder, with a progress bar and a summary.

    iconicity harvest --catalog ../shared/data/references/catalog.json \\
        --images-dir ../shared/data/references --out catalog/
    iconicity harvest --config harvest.yaml --out catalog/
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from services.harvester.config import DEFAULT_PERTURBATIONS, HarvestConfig, PromptSettings


def add_harvest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="harvest configuration (YAML); flags below override it")
    parser.add_argument("--catalog", type=Path, metavar="FILE",
                        help="import this catalog file (offline source), e.g. ../shared/data/references/catalog.json")
    parser.add_argument("--images-dir", type=Path, metavar="DIR", help="images of --catalog, one subfolder per slug (default: the catalog file's folder)")
    parser.add_argument("--extra-images", type=Path, metavar="DIR", action="append", default=[],
                        help="user-supplied images, DIR/<slug or QID>/*.jpg (repeatable)")
    parser.add_argument("--image-urls", type=Path, metavar="FILE", action="append", default=[],
                        help="user-supplied image URLs per reference, JSON or `id url` lines (repeatable)")
    parser.add_argument("--export", type=Path, metavar="CSV", help="paintings export for textual uniqueness, e.g. ../shared/data/wikidata/artonwikidata_paintings.csv")
    parser.add_argument("--captions", type=Path, metavar="FILE", action="append", default=[],
                        help="caption corpus file for training-data frequency: .txt, .jsonl or .parquet (repeatable)")
    parser.add_argument("--perturbations", nargs="+", metavar="NAME", help=f"prompt variants to make (default: {' '.join(DEFAULT_PERTURBATIONS)})")
    parser.add_argument("--custom-prompts", type=Path, metavar="FILE", help="custom prompt variants (YAML, JSON or CSV)")
    parser.add_argument("--out", type=Path, metavar="DIR", required=True, help="catalog folder to create or update")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> HarvestConfig:
    config = HarvestConfig.from_file(args.config) if args.config else HarvestConfig()
    if args.catalog:
        config = replace(config, source="offline", catalog_file=args.catalog, images_dir=args.images_dir)
    elif args.images_dir:
        config = replace(config, images_dir=args.images_dir)
    if config.source == "offline" and config.catalog_file is None:
        raise ValueError("nothing to harvest: give --catalog FILE (offline) or --config FILE")
    covariates = config.covariates
    if args.export or args.captions:
        covariates = replace(covariates, export=args.export or covariates.export,
                             captions=tuple(args.captions) or covariates.captions)
    prompts = config.prompts
    if args.perturbations or args.custom_prompts:
        prompts = PromptSettings(tuple(args.perturbations or prompts.perturbations), args.custom_prompts or prompts.custom)
    return replace(config, covariates=covariates, prompts=prompts,
                   image_folders=config.image_folders + tuple(args.extra_images),
                   url_lists=config.url_lists + tuple(args.image_urls))


def run_harvest(args: argparse.Namespace) -> int:
    from services.harvester.catalog import Catalog
    from services.harvester.harvest import HarvestFailed
    from services.harvester.plan import run_config

    config = config_from_args(args)
    with Catalog(args.out) as catalog, _progress(args.no_progress or args.json) as on_reference:
        try:
            summaries = run_config(config, catalog, on_reference=on_reference)
        except HarvestFailed as error:
            _print_summary([error.summary], catalog, args)
            raise RuntimeError(str(error)) from error
        _print_summary(summaries, catalog, args)
    # Failed images are reported, not fatal: the catalog holds everything else.
    return 0


class _progress:
    """A tqdm bar over references (on stderr), or nothing."""

    def __init__(self, disabled: bool) -> None:
        self.disabled = disabled
        self.bar = None

    def __enter__(self):
        if self.disabled:
            return None
        from tqdm import tqdm

        # disable=None: no bar when stderr is not a terminal (CI logs, pipes).
        self.bar = tqdm(desc="harvest", unit="ref", file=sys.stderr, dynamic_ncols=True, disable=None)
        return lambda record: (self.bar.update(1), self.bar.set_postfix_str(record.slug[:32]))

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(summaries, catalog, args: argparse.Namespace) -> None:
    references = catalog.references()
    by_kind: dict[str, int] = {}
    for record in references:
        by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
    images = sum(len(catalog.images(r.id)) for r in references)
    covariates = catalog.covariates()
    filled = {name: sum(1 for row in covariates.values() if row.get(name) is not None)
              for name in sorted({k for row in covariates.values() for k in row} - {"reference_id", "title"})}
    prompts: dict[str, int] = {}
    for prompt in catalog.prompts():
        prompts[prompt.perturbation] = prompts.get(prompt.perturbation, 0) + 1
    failures = [f for s in summaries for f in s.failures]
    result = {
        "catalog": str(args.out), "snapshots": [s.snapshot_id for s in summaries],
        "status": summaries[-1].status if summaries else "empty",
        "references": len(references), "references_by_kind": by_kind, "images": images,
        "images_stored_now": sum(s.images_stored for s in summaries),
        "images_already_held": sum(s.images_reused for s in summaries),
        "covariates_filled": filled, "prompts_by_perturbation": prompts,
        "failures": [{"reference_id": r, "stage": stage, "reason": why} for r, stage, why in failures],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
    print(f"catalog {args.out}: {len(references)} references ({kinds}), {images} images "
          f"({result['images_stored_now']} stored now, {result['images_already_held']} already held)")
    for name, count in filled.items():
        print(f"  covariate {name:<24} filled for {count}/{len(references)}")
    for name, count in sorted(prompts.items()):
        print(f"  prompts   {name:<24} {count}")
    unavailable = [f for f in failures if f[1].startswith("prompt:")]
    failures = [f for f in failures if not f[1].startswith("prompt:")]
    print(f"  prompt variants that could not be made: {len(unavailable)}")
    for reference_id, stage, reason in unavailable:
        print(f"    {reference_id} [{stage.removeprefix('prompt:')}]: {reason.split(': ', 1)[-1]}")
    print(f"  failures: {len(failures)}")
    for reference_id, stage, reason in failures:
        print(f"    {reference_id} [{stage}]: {reason}")
