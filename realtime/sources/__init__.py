"""Acquisition sources: LSL, BrainFlow, in-process file replay. One interface (``Source``)."""
