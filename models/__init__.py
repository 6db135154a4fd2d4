"""Torch modules and losses, and a registry from config name to class. No file I/O, no LSL."""
