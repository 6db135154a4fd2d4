"""Generative decoding: FLIG and SMR + ICG on paired image / response data.

``train_generative(config, data, out)`` and ``evaluate_generative(run)`` are the library entry
points the CLI dispatches to when ``model.name`` is ``flig`` or ``smr_icg``; ``load_generative(run)``
gives the trained model object whose ``generate(responses) -> images`` the engine calls.
"""
