"""Customer data platform: event contracts and ingestion, consent, identity resolution,
profiles and features, segments, erasure and export, over the CDP tables.

Entry points: `ingest.ingest` / `ingest.ingest_parsed`, `consent.latest_consent` /
`has_consent`, `people.resolve_profile` / `profile_buckets`, `segments.compile_segment` /
`count_segment` / `snapshot_segment` / `segment_changes`, `privacy.erase_person` /
`export_person`, `quarantine.replay_quarantine`. `tables.ensure_cdp_tables(engine)` creates the
CDP's tables.
"""
