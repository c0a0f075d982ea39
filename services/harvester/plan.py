"""What a harvest config asks for, as sources and an enrich step, and running it.

A config harvests its main source (offline or Wikidata), then the user-supplied images
(folders, URL lists) into the references that are now known, each as its own snapshot; the
last snapshot then computes covariates and prompt variants over the whole catalog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from services.harvester.cachefiles import cache_folder
from services.harvester.catalog import Catalog, StoredPrompt
from services.harvester.config import HarvestConfig
from services.harvester.export import ExportedPainting, export_beside, read_export
from services.harvester.harvest import HarvestSummary, Progress, harvest
from services.harvester.records import ReferenceRecord
from services.harvester.sources import FolderSource, OfflineSource, Source, SourceImage, UrlListSource

log = logging.getLogger("iconicity.harvester")


class WikidataSource:
    """References from the query service; their images from Commons thumbnails."""

    name = "wikidata"

    def __init__(self, settings: dict[str, Any], thumbnail_width: int | None, commons_base: str | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        from services.harvester.commons import CommonsClient
        from services.harvester.wikidata import SparqlClient, WikidataConfig

        self.config = WikidataConfig.from_dict(settings)
        overrides: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        self.client = SparqlClient.from_config(self.config, **overrides)
        if commons_base:
            overrides["file_path_base"] = commons_base
        self.commons = CommonsClient.from_config(self.config, **overrides)
        self.thumbnail_width = thumbnail_width

    def query(self) -> str:
        return json.dumps({"wikidata": self.config.to_dict(), "thumbnail_width": self.thumbnail_width,
                           "commons_base": self.commons.file_path_base},
                          sort_keys=True, default=str)

    def records(self) -> Iterator[ReferenceRecord]:
        from services.harvester.wikidata import harvest_wikidata

        yield from harvest_wikidata(self.config, self.client)

    def images(self, record: ReferenceRecord) -> Iterator[SourceImage]:
        for url in record.image_urls:
            yield SourceImage(url, lambda url=url: self.commons.fetch(url, self.thumbnail_width).data)


def url_fetcher(settings: dict[str, Any] | None = None) -> Callable[[str], bytes]:
    """Bytes of user-supplied image URLs, with the harvester's User-Agent and retries: one
    client for a whole list, built once rather than per URL."""
    from services.harvester.commons import CommonsClient
    from services.harvester.wikidata import WikidataConfig

    config = WikidataConfig.from_dict(settings or {"contact": "unknown (set wikidata.contact)"})
    client = CommonsClient.from_config(config)
    return lambda url: client.fetch(url).data


SourceFactory = Callable[[Catalog], Source]


def source_factories(config: HarvestConfig) -> list[SourceFactory]:
    """The config's sources in the order they run, each built when its turn comes, so that
    the user-supplied images see the references the main source added."""
    factories: list[SourceFactory] = []
    if config.source == "wikidata":
        factories.append(lambda catalog: WikidataSource(config.wikidata, config.thumbnail_width, config.commons_base))
    elif config.catalog_file is not None:
        factories.append(lambda catalog: OfflineSource(config.catalog_file, config.images_dir))
    for folder in config.image_folders:
        factories.append(lambda catalog, folder=folder: FolderSource(folder, _known(catalog)))
    for url_file in config.url_lists:
        factories.append(lambda catalog, url_file=url_file: UrlListSource(
            url_file, _known(catalog), url_fetcher(config.wikidata or None)))
    return factories


def _known(catalog: Catalog) -> dict[str, ReferenceRecord]:
    return {r.id: r for r in catalog.references()}


def enrich_for(config: HarvestConfig) -> Callable[[Catalog, HarvestSummary], None]:
    """Covariates and prompt variants over the whole catalog, stored, counted in the summary."""

    def enrich(catalog: Catalog, summary: HarvestSummary) -> None:
        from services.harvester.covariates import TitleIndex, count_title_captions, covariate_rows
        from services.harvester.prompts import VariantUnavailable, load_custom_variants, prompt_variants

        export = export_for(config)
        if export is not None:
            wanted = {record.qid or "" for record in catalog.references()}
            fill_from_export(catalog, summary.snapshot_id, read_export(export, wanted))
        records = catalog.references()
        counts = None
        if config.covariates.captions:
            counts = count_title_captions([r.title for r in records], config.covariates.captions,
                                          caption_field=config.covariates.caption_field,
                                          workers=config.covariates.workers or None).counts
        export_index = TitleIndex.from_export_csv(export, cache_dir=title_index_cache()) if export is not None else None
        rows = covariate_rows(records, export=export_index, caption_counts=counts)
        catalog.put_covariates({row.reference_id: row.to_dict() for row in rows})
        summary.covariates_filled = {
            name: sum(1 for row in rows if getattr(row, name) is not None)
            for name in ("sitelinks", "year", "same_title_catalog", "same_title_export", "caption_count")
        }
        custom = load_custom_variants(config.prompts.custom) if config.prompts.custom else None
        made: dict[str, int] = {}
        for record in records:
            prompts = []
            for name in config.prompts.perturbations:
                try:
                    prompts.extend(prompt_variants(record, (name,), custom))
                except VariantUnavailable as error:
                    catalog.record_failure(summary.snapshot_id, record.id, f"prompt:{name}", str(error))
                    summary.failures.append((record.id, f"prompt:{name}", str(error)))
            unique = {p.perturbation: p for p in prompts}
            catalog.put_prompts(StoredPrompt(p.reference_id, p.perturbation, p.text, p.method) for p in unique.values())
            for name in unique:
                made[name] = made.get(name, 0) + 1
        summary.prompts_by_perturbation = made

    return enrich


def title_index_cache() -> Path:
    """Where the export's title index is kept between runs (`TitleIndex.from_export_csv`)."""
    return cache_folder("title-index")


def export_for(config: HarvestConfig) -> Path | None:
    """The paintings export the config names, else, for an offline harvest of the shared
    data, the one kept beside its references folder."""
    if config.covariates.export is not None:
        return config.covariates.export
    if config.source == "offline" and config.catalog_file is not None:
        return export_beside(config.images_dir or Path(config.catalog_file).parent)
    return None


def fill_from_export(catalog: Catalog, snapshot_id: int, paintings: dict[str, ExportedPainting]) -> int:
    """Gives references that lack them the depicts and genres the export holds for their
    QID (the literal prompts are composed from these); returns how many were filled."""
    filled = 0
    for record in catalog.references():
        painting = paintings.get(record.qid or "")
        if painting is None or (record.depicts and record.genres):
            continue
        catalog.put_reference(snapshot_id, ReferenceRecord.from_dict({
            **record.to_dict(), "depicts": record.depicts or painting.depicts, "genres": record.genres or painting.genres}))
        filled += 1
    return filled


def run_config(config: HarvestConfig, catalog: Catalog, on_reference: Progress | None = None) -> list[HarvestSummary]:
    """Runs every source of `config` into `catalog`, then enriches; one summary per source.
    Raises `HarvestFailed` (with what was kept) when a source fails."""
    factories = source_factories(config)
    summaries = []
    for index, make in enumerate(factories):
        enrich = enrich_for(config) if index == len(factories) - 1 else None
        source = make(catalog)
        sizes = image_size_cache() if source.name != WikidataSource.name else None
        summaries.append(harvest(source, catalog, enrich=enrich, on_reference=on_reference, image_sizes=sizes))
    return summaries


def image_size_cache() -> Path:
    """Where the decoded sizes of harvested images are kept between runs (`harvest.decoded_size`):
    an offline harvest of the same files into a new catalog, as every `iconicity run` into a
    new folder does, decodes none of them again. Not for Wikidata harvests: thousands of
    thumbnails, into a catalog that is kept and continued, which never decodes one twice."""
    return cache_folder("image-sizes")


def source_for_request(request: Any, catalog: Catalog) -> tuple[Source, Callable | None]:
    """The servicer's factory: StartHarvest's request -> the main source and the enrich step
    (user-supplied images are the CLI's business)."""
    if request.WhichOneof("source") == "offline":
        if not request.offline.catalog_file:
            raise ValueError("offline.catalog_file is empty")
        config = HarvestConfig(source="offline", catalog_file=request.offline.catalog_file,
                               images_dir=request.offline.images_dir or None)
    else:
        config = HarvestConfig.from_yaml(request.config_yaml)
    return source_factories(config)[0](catalog), enrich_for(config)
