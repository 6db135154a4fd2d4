"""Dataset loaders for the published layouts (THINGS-EEG2, THINGS-MEG, TVSD, Allen)."""
