"""The built-in THINGS-like simulator: images, EEG/MEG through an MNE forward model, MUA."""
