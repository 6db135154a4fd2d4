"""Offline flow: loaders, simulator, preprocessing fit, image features, training, evaluation, bundle export."""
