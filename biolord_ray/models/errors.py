"""The error of model sources (its own module: the packaged-model builders raise it too,
and ``biolord_ray.models`` imports them)."""


class ModelSourceError(ValueError):
    """A model spec cannot be turned into a local directory; the message says what to do."""
