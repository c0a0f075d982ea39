"""`iconicity probe`: score controlled edits of every reference in a catalog.

Without a generator there are no generated images, but there are images whose answer is
known: replicas of a work (should be recognized and reused: high CRA, low VI), composites that
reuse half of its grid cells (recognized or not, half reused), and other works (not
recognized). Scoring them shows what the numbers mean on real images, and that the
encoders in use separate the three.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from services.common.images import DecodedImage, decode_image
from services.scorer import edits
from services.scorer.references import CatalogEntry, Imagery, load_catalog
from services.scorer.results import format_table, image_rows, write_parquet
from services.scorer.scoring import Scorer, ScoreResult, ScoreSettings

PROBES = ("replica", "partial", "unrelated")


@dataclass(frozen=True)
class ProbeResult:
    reference_id: str
    imagery: Imagery
    probe: str
    result: ScoreResult


def probe_images(entries: list[CatalogEntry], index: int, canonical: list[np.ndarray], n: int, seed: int) -> dict[str, list[DecodedImage]]:
    """The probe images of work `index`: `n` replicas, `n` composites taking 8 of its 16
    cells (the rest from other works) and the canonical images of `n` other works."""
    rng = np.random.default_rng([seed, index])
    others = [(index + step) % len(entries) for step in range(1, n + 1)]
    replicas = [edits.replica(canonical[index], rng)[0] for _ in range(n)]
    partial = [edits.composite(canonical[index], canonical[other], 8, rng)[0] for other in others]
    unrelated = [canonical[other] for other in others]
    return {
        "replica": [_as_image(p, f"replica-{i}.png") for i, p in enumerate(replicas)],
        "partial": [_as_image(p, f"partial-{entries[o].slug}.png") for p, o in zip(partial, others)],
        "unrelated": [_as_image(p, f"{entries[o].slug}.png") for p, o in zip(unrelated, others)],
    }


def run_probes(scorer: Scorer, root: Path, n: int = 3, seed: int = 0, imagery: Imagery | None = None) -> list[ProbeResult]:
    entries = load_catalog(root)
    if len(entries) < 2:
        raise ValueError(f"probing needs at least two works in {root}, found {len(entries)}")
    references = [entry.load() for entry in entries]
    canonical = [edits.shrink(reference.images[0].pixels, edits.REPLICA_MAX_SIDE) for reference in references]
    results = []
    for index, reference in enumerate(references):
        settings = ScoreSettings(imagery=imagery or reference.imagery)
        for probe, images in probe_images(entries, index, canonical, n, seed).items():
            results.append(ProbeResult(reference.reference_id, settings.imagery, probe, scorer.score(reference, images, settings)))
    return results


def format_probes(results: list[ProbeResult]) -> str:
    by_work: dict[str, dict[str, ProbeResult]] = {}
    for r in results:
        by_work.setdefault(r.reference_id, {})[r.probe] = r
    rows = []
    for work, probes in by_work.items():
        rep, part, other = (probes[p].result.summary for p in PROBES)
        rows.append([work, rep.imagery.value, rep.n_references_kept, rep.cra, rep.vr, part.cra, part.vr, part.crt, other.cra, other.vr])
    means = [float(np.mean([row[i] for row in rows])) for i in range(3, 10)]
    rows.append(["mean", "", "", *means])
    first = results[0].result.summary
    headers = ["reference", "imagery", "kept", "replica CRA", "replica VR", "partial CRA", "partial VR", "partial CRT",
               "unrelated CRA", "unrelated VR"]
    return "\n".join([
        format_table(headers, rows),
        "",
        f"encoders: recognition={first.recognition_encoder}  realization={first.realization_encoder}",
        "replica: edited copies of the work; partial: 8 of 16 grid cells from the work, the rest from "
        "another; unrelated: other works.",
        "Expect replicas recognized and reused (CRA ~1, VR high), partial reuse near VR 0.5, unrelated CRA ~0.",
    ])


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    from services.cli import add_encoder_arguments

    parser.add_argument("--references", required=True, type=Path, metavar="DIR",
                        help="a references folder: catalog.json and a folder of images per work")
    parser.add_argument("--per-probe", type=int, default=3, metavar="N", help="images of each probe kind per work")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imagery", choices=["static", "dynamic"], help="override each work's imagery from the catalog")
    add_encoder_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the per-work summaries as JSON")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write per-image results (Parquet) and summaries (JSON)")


def run_probe(args: argparse.Namespace) -> int:
    from services.cli import build_scorer

    if args.per_probe < 1:
        raise ValueError(f"--per-probe must be at least 1, got {args.per_probe}")
    scorer = build_scorer(args)
    results = run_probes(scorer, args.references, args.per_probe, args.seed, Imagery(args.imagery) if args.imagery else None)
    summaries = [{"reference": r.reference_id, "probe": r.probe, **_summary(r.result)} for r in results]
    if args.out is not None:
        rows = [{**row, "probe": r.probe} for r in results for row in image_rows(r.result, r.reference_id)]
        write_parquet(rows, args.out / "probe_images.parquet")
        (args.out / "probe_summary.json").write_text(json.dumps(summaries, indent=2))
    print(json.dumps(summaries, indent=2) if args.json else format_probes(results))
    return 0


def _summary(result: ScoreResult) -> dict:
    return {k: v for k, v in result.to_dict().items() if k != "images"}


def _as_image(pixels: np.ndarray, name: str) -> DecodedImage:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return decode_image(buffer.getvalue(), name)
