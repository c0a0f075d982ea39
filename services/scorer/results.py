"""Score results as files and tables: Parquet rows per image, a readable text table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.scorer.scoring import ScoreResult


def image_rows(result: ScoreResult, reference_id: str = "") -> list[dict]:
    """One flat row per generated image, with what produced it (for Parquet or CSV)."""
    summary = result.to_dict()
    context = {
        "reference": reference_id,
        "imagery": summary["imagery"],
        "recognition_encoder": summary["encoders"]["recognition"],
        "realization_encoder": summary["encoders"]["realization"],
        "recognition_threshold": summary["thresholds"]["recognition"],
        "reuse_threshold": summary["thresholds"]["reuse"],
        "n_references_kept": summary["n_references_kept"],
    }
    rows = []
    for image in summary["images"]:
        row = {**context, **image}
        row["reuse_map"] = [cell for line in image["reuse_map"] for cell in line]
        rows.append(row)
    return rows


def write_parquet(rows: Sequence[dict], path: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table; floats with 3 decimals."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)


def format_result(result: ScoreResult) -> str:
    """The readable form of one `iconicity score` run."""
    d = result.to_dict()
    table = format_table(
        ["file", "s_i", "recognized", "VR", "VI", "m max", "m mean", "m p90"],
        [[i["file"], i["recognition_similarity"], "yes" if i["recognized"] else "no", i["vr"], i["vi"],
          i["crop_similarity_max"], i["crop_similarity_mean"], i["crop_similarity_p90"]] for i in d["images"]],
    )
    return "\n".join([
        table,
        "",
        f"images: {d['n_images']}   reference images kept: {d['n_references_kept']} ({d['imagery']})",
        f"encoders: recognition={d['encoders']['recognition']} (tau={d['thresholds']['recognition']:.3f})  "
        f"realization={d['encoders']['realization']} (tau_reuse={d['thresholds']['reuse']:.3f})",
        f"CRA={d['cra']:.3f}  VR={d['vr']:.3f}  VI={d['vi']:.3f}  "
        f"CRT={d['crt']:.3f} ({d['crt_variant'].replace('_', ' ')})  CRT(all images)={d['crt_all_images']:.3f}",
    ])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
