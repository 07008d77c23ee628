"""The errors a user meets, each one line that says what to do next (main.py and the scripts
print the message and exit). Kept apart from utils (which loads torch) so that the scripts'
file layer (safe_files.py) can raise them without loading it."""


class UserError(Exception):
    """An error the user can fix; main.py prints its message (which says what to do) and exits 1."""


class ArgError(UserError):
    """A bad argument found after parsing (a resumed run's settings, a method that cannot use
    the dataset's b): one line, exit code 2, like argparse's own errors."""


class DiskFull(UserError):
    """No space left while writing a file: the message names the file and the free space."""


class BadInput(UserError):
    """A data file that cannot be used (e.g. an unreadable image), met while training: the
    Solver saves its progress before stopping. A DataLoader worker's copy of this error
    arrives with the worker's traceback in its message; only the message itself is kept."""

    def __init__(self, message):
        if "Original Traceback" in message:
            message = message.strip().splitlines()[-1].split("BadInput: ", 1)[-1]
        super().__init__(message)


class RunStopped(Exception):
    """Training stopped on purpose (a signal, a diverged loss): message and exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code
