"""The two kinds of failure the CLI turns into one red line and an exit code."""


class BnexpError(Exception):
    """Base class: the message is one line that names the problem and the fix."""

    exit_code = 1


class UsageError(BnexpError):
    """The user asked for something that cannot be: bad option, key, value, name (exit 2)."""

    exit_code = 2


class RunFailure(BnexpError):
    """Something went wrong while doing what was asked: unreadable data, disk full (exit 1)."""

    exit_code = 1


def nearest(name: str, choices) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_name(kind: str, name: str, choices) -> UsageError:
    """The standard message for an unknown registry name: the valid ones and the nearest."""
    valid = ", ".join(sorted(choices))
    return UsageError(f"unknown {kind} {name!r}{nearest(name, choices)}; valid: {valid}")
