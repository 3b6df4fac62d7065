"""The one exception family of convc: ConvcError for invalid values (a ValueError)."""


class ConvcError(ValueError):
    """An invalid argument, shape or graph; the message names the op, the argument and the rule."""
