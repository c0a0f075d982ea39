"""A harvest's configuration: a YAML file (or the CLI's flags) -> sources and enrichment.

    source: offline              # offline | wikidata
    offline:
      catalog: ../shared/data/references/catalog.json
      images_dir: ../shared/data/references
    wikidata: {...}              # WikidataConfig's keys (endpoint, user_agent, contact, ...)
    images:
      thumbnail_width: 1024      # Commons thumbnails this wide (Wikidata source)
      commons_base: URL          # Special:FilePath of Commons or of a mirror
      folders: [DIR, ...]        # DIR/<slug or QID>/*.jpg, added to known references
      url_lists: [FILE, ...]     # {reference id: [url, ...]} or `reference_id url` lines
    covariates:
      export: ../shared/data/wikidata/artonwikidata_paintings.csv
      captions: [FILE, ...]      # .txt, .jsonl, .parquet
      caption_field: caption
      workers: 0                 # 0: every core
    prompts:
      perturbations: [original, synonym, literal]
      custom: FILE               # custom variants (YAML, JSON or CSV)

A wrong key is an error that names it and the keys allowed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SOURCES = ("offline", "wikidata")
DEFAULT_PERTURBATIONS = ("original", "synonym", "literal")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


def check_keys(where: str, data: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """`data` as a mapping whose keys are all in `allowed`, else a ConfigError naming them.

    >>> check_keys("prompts", {"perturbation": []}, ("perturbations", "custom"))
    Traceback (most recent call last):
    ...
    services.harvester.config.ConfigError: prompts: unknown key 'perturbation' (allowed: perturbations, custom)
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    return data


@dataclass(frozen=True)
class CovariateSettings:
    export: Path | None = None
    captions: tuple[Path, ...] = ()
    caption_field: str = "caption"
    workers: int = 0


@dataclass(frozen=True)
class PromptSettings:
    perturbations: tuple[str, ...] = DEFAULT_PERTURBATIONS
    custom: Path | None = None


@dataclass(frozen=True)
class HarvestConfig:
    source: str = "offline"
    catalog_file: Path | None = None
    images_dir: Path | None = None
    wikidata: dict[str, Any] = field(default_factory=dict)
    thumbnail_width: int | None = 1024
    commons_base: str | None = None
    image_folders: tuple[Path, ...] = ()
    url_lists: tuple[Path, ...] = ()
    covariates: CovariateSettings = CovariateSettings()
    prompts: PromptSettings = PromptSettings()

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path = Path(".")) -> HarvestConfig:
        """Relative paths are taken from `base` (the config file's folder)."""
        data = check_keys("harvest config", data, ("source", "offline", "wikidata", "images", "covariates", "prompts"))

        def path(value: Any) -> Path | None:
            return None if value in (None, "") else (base / Path(str(value)).expanduser())

        source = data.get("source", "offline")
        if source not in SOURCES:
            raise ConfigError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
        offline = check_keys("offline", data.get("offline"), ("catalog", "images_dir"))
        if source == "offline" and not offline.get("catalog"):
            raise ConfigError("offline: `catalog` is required when source is offline")
        extra = check_keys("images", data.get("images"), ("thumbnail_width", "commons_base", "folders", "url_lists"))
        cov = check_keys("covariates", data.get("covariates"), ("export", "captions", "caption_field", "workers"))
        prompts = check_keys("prompts", data.get("prompts"), ("perturbations", "custom"))
        wikidata = data.get("wikidata") or {}
        if source == "wikidata":
            from services.harvester.wikidata import WikidataConfig

            WikidataConfig.from_dict(wikidata)  # validated now, so a bad key fails before any query
        return cls(
            source=source,
            catalog_file=path(offline.get("catalog")),
            images_dir=path(offline.get("images_dir")),
            wikidata=dict(wikidata),
            thumbnail_width=extra.get("thumbnail_width", 1024),
            commons_base=extra.get("commons_base"),
            image_folders=tuple(path(p) for p in extra.get("folders") or ()),
            url_lists=tuple(path(p) for p in extra.get("url_lists") or ()),
            covariates=CovariateSettings(
                export=path(cov.get("export")),
                captions=tuple(path(p) for p in cov.get("captions") or ()),
                caption_field=str(cov.get("caption_field", "caption")),
                workers=int(cov.get("workers", 0)),
            ),
            prompts=PromptSettings(
                perturbations=tuple(prompts.get("perturbations") or DEFAULT_PERTURBATIONS),
                custom=path(prompts.get("custom")),
            ),
        )

    @classmethod
    def from_yaml(cls, text: str, base: Path = Path(".")) -> HarvestConfig:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"harvest config is not valid YAML: {error}") from error
        return cls.from_dict(data, base)

    @classmethod
    def from_file(cls, path: str | Path) -> HarvestConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no harvest config {str(path)!r}")
        return cls.from_yaml(path.read_text(), path.parent)
