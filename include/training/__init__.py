"""Training, evaluation, model bundles, the champion/challenger rule and the registry."""
