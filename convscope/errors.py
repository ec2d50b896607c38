"""convscope's error types: every message is one line that says what was wrong and what to do."""


class ConvscopeError(ValueError):
    """Base class: a one-line, actionable message."""


class ImageError(ConvscopeError):
    """An image could not be read or is not usable (names the file and the problem)."""


class LayerError(ConvscopeError):
    """A layer name or module could not be resolved, or cannot be used by the method."""


class TargetError(ConvscopeError):
    """A target (class index, sequence or callable) does not fit the model's output or the batch."""


class ModelError(ConvscopeError):
    """A model could not be loaded or wrapped (unknown name, missing weights, unsafe file)."""


class InputError(ConvscopeError):
    """A method's input tensor has the wrong type, shape, channel count or dtype."""


class OptionError(ConvscopeError):
    """An option has the wrong type or is outside its allowed range (names the option and the range).
    ``field``: the option's name (None when the message is about the call as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CostError(ConvscopeError):
    """A call would cost more forward passes or memory than the limits allow (says the estimate).
    ``cost``: the estimate (``convscope.engine.Cost``); ``limits``: the limits it is over (``engine.Limits``)."""

    def __init__(self, message: str, cost: object = None, limits: object = None) -> None:
        super().__init__(message)
        self.cost, self.limits = cost, limits
