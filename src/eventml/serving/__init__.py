"""Serving: routes, the stream engine, statistics."""
