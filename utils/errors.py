"""What can end a command, and with which exit code: the exceptions every module may raise,
below everything else so that any module can import them."""

# Exit codes of the scripts, besides 0 and 130 (Ctrl-C).
EXIT_USER_ERROR = 2  # bad input or a bad environment: one line on stderr says what to fix
EXIT_DIVERGED = 3  # a loss became NaN or infinite; the last good checkpoint is kept
EXIT_PEER_LOST = 4  # another process of a torchrun job stopped; the last checkpoint is kept
EXIT_STOPPED = 75  # stopped on a signal with a checkpoint to resume from (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), with a checkpoint when training had begun


class UserError(Exception):
    """A mistake a user can fix (a bad flag, a missing file, a full disk): one line, exit 2."""


class DataError(UserError):
    """A dataset that cannot be found or read; the message says what to do."""


class Stopped(Exception):
    """Training stopped on a signal with a checkpoint to resume from (exit 75, Ctrl-C 130)."""

    def __init__(self, message, code=EXIT_STOPPED):
        super().__init__(message)
        self.code = code


class Diverged(Exception):
    """A loss became NaN or infinite; the last good checkpoint is kept (exit 3)."""
