"""The exceptions gpubp raises beyond ValueError and TypeError."""


class TrainingDiverged(FloatingPointError):
    """Raised by :meth:`Network.fit` when the loss stops being finite.

    Attributes
    ----------
    epoch : int or None
        The (0-based) epoch that diverged.
    restored_epoch : int or None
        The epoch whose starting parameters were restored: the latest of the start of the
        diverged epoch, of the epoch before and of the run whose full training loss is
        finite (the parameters at the start of an epoch can be finite yet overflow).
    restored_loss : float or None
        The training loss of the restored parameters (finite unless even the run's
        starting parameters overflow on the data).
    """

    epoch = restored_epoch = restored_loss = None
