"""Online engine: sources, ring buffer, causal preprocessing, epoching, batching, inference, outputs."""
