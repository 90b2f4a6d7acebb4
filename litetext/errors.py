"""One error type for everything a user can fix: the CLI prints its message as one line, no traceback."""


class LitetextError(ValueError):
    """A problem with the user's input or environment; the message says what is wrong and how to fix it.
    A ValueError, so code that guards against bad values catches it too."""

