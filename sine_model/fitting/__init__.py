"""Layer 6 — what is fitted on the user's references at run time: reference folds, calibration, the
refiner's fit, test-time adaptation, and :class:`~sine_model.fitting.preparation.ReferencePreparation`
which runs them in order."""
