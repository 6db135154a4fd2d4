"""Shipped YAML configs (package data only; no code lives here)."""
