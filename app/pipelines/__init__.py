"""Offline work: ingest, publish, model lifecycle, evaluation, bootstrap, URL fetching."""
