"""Durable state: a SQLite engine with one writer thread (group commit) and queue semantics on top."""
