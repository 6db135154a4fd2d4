"""Generative decoding: FLIG, SMR + ICG and MAP with a denoiser prior on paired image /
response data.

``train_generative(config, data, out)`` and ``evaluate_generative(run)`` are the library entry
points the CLI dispatches to when ``model.name`` names a registered generator (a model class whose
traits say ``generative=True`` and whose ``generator`` declares its trainer and ablation; see
:mod:`neuralign.models.registry`); ``load_generative(run)`` gives the trained model object whose
``generate(responses) -> images`` the engine calls.
"""
