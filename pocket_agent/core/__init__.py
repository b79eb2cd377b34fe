"""The domain's middle: projects, the path policy, domain errors and events, and the
hub that fans events out to followers. Nothing here imports ``net/`` or ``wire/``."""
