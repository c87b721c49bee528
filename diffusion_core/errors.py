"""The core's exception types. User-facing failures are one line naming the file, key or value at fault."""


class CoreError(ValueError):
    """A request or a model folder the core cannot use; the message is one line for the user."""


class FillCancelled(Exception):
    """The caller's cancel check returned True between two denoising steps."""
