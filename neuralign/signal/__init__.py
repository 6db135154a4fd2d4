"""Causal DSP objects shared by the offline chain and the realtime engine."""
