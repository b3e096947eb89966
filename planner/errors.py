"""User-facing errors: what was wrong, where, and what to do. The CLI prints them on one
line and exits with code 2; they never surface as tracebacks."""


class InputError(ValueError):
    """Bad input a user can fix (file, flag, value). The message says what and how."""


class InfeasibleError(RuntimeError):
    """No plan meets the requested SLO; the message says why in numbers and what would help."""
