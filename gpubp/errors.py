"""The exceptions gpubp raises beyond ValueError and TypeError."""


class TrainingDiverged(FloatingPointError):
    """Raised by :meth:`Network.fit` when the loss stops being finite."""
