"""One error type for everything a user can fix: the CLI prints its message as one line, no traceback."""


class LitetextError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and how to fix it."""


def missing_dependency(package: str, extra: str) -> LitetextError:
    return LitetextError(f"{package} is not installed; install it with: pip install 'litetext[{extra}]'")
