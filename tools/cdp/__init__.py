"""Customer data platform: event contracts and ingestion, consent, identity resolution,
profiles and features, segments, erasure and export, over the CDP tables.

Entry points: `ingest.ingest` / `ingest.ingest_parsed`, `consent.consented` / `has_consent` /
`latest_consent`, `people.resolve_profile` / `bucket_for` / `buckets_for`,
`features.features_for` / `rfm_scores`, `segments.compile_segment` / `count_segment` /
`snapshot_segment` / `segment_changes`, `privacy.erase_person` / `export_person`,
`quarantine.replay_quarantine`. `tables.ensure_cdp_tables(engine)` creates the CDP's tables.
"""
