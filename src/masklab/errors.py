"""Errors a user can act on: the CLI prints their message in one line, without a traceback.

Also how every entry point (a command, a DVC stage, a sweep worker, a submitit job) turns an exception into
an exit: :func:`run_reporting_errors`. It lives here, in the base layer, so none of them imports the CLI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
# Where the bug line sends a user (README, Troubleshooting): the repository's issue tracker.
REPORT_BUGS = "open an issue in masklab's repository with the command you ran and this traceback"


class UserError(Exception):
    """A problem with the user's input (config value, file, dataset): the message names it and what was expected."""


class NotFoundError(UserError, LookupError):
    """Something the user named (a run, an artifact, a model version) does not exist.

    Also a LookupError, so code that looks a thing up and falls back when it is absent keeps working."""


# Exit statuses, one rule for every command (README "Exit status", `masklab --help`).
EXIT_PROBLEMS = 1  # a check ran and found problems: `data check` (an error in the dataset), `pipeline check`
EXIT_MISTAKE = 2  # a mistake in the input: one line on stderr
EXIT_BUG = 70  # EX_SOFTWARE of sysexits.h: a bug in masklab (or the user's model code), after its traceback
EXIT_JOB_LOST = 75  # EX_TEMPFAIL: a submitit job ended without a result (killed, pre-empted, out of memory)


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: the message names the epoch, the step, the batch's samples and the
    checkpoint of the last good weights (the usual causes are a learning rate too high or a broken sample)."""


class TrainingInterrupted(UserError):
    """Training was stopped by SIGTERM (a scheduler's pre-emption, ``kill``): a checkpoint was saved and the message
    says how to resume. The command exits with 143 (128 + SIGTERM), as a process ended by the signal would."""

    exit_code = 143


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user's input is wrong: masklab's own UserError and config errors."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException


    return (UserError, OmegaConfBaseException, HydraException)


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user's mistake, or None when ``exc`` is a bug (in masklab or the user's code)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException


    if isinstance(exc, InstantiationException):
        cause = exc.__cause__
        # Hydra wraps whatever the `_target_` raised. A UserError inside, a target that cannot be found, or
        # arguments that do not fit its signature (raised at the call, before any frame of the target runs)
        # are the config's fault; anything raised inside the target's own code is a bug there.
        if isinstance(cause, UserError):
            return str(cause)
        at_call = cause is None or cause.__traceback__ is None or cause.__traceback__.tb_next is None
        if not (at_call or str(exc).startswith("Error locating target")):
            return None
    elif not isinstance(exc, user_error_types()):
        return None
    text = str(exc).strip()
    # OmegaConf and Hydra add indented "full_key: ..." lines: keep them, on the same line.
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) \
        if isinstance(exc, OmegaConfBaseException | InstantiationException) else text


class CommandExit(SystemExit):
    """A command's exit whose reason was printed already: ``message`` is that line (a user's mistake) or the
    bug's last line. A job run by masklab's submitit launcher hands it back to the submitting process."""

    def __init__(self, code: int, message: str):
        super().__init__(code)
        self.message = message


def run_reporting_errors(label: str, func: Callable[[], T]) -> T:
    """Run ``func`` for ``masklab <label>``: a user's mistake exits 2 (:data:`EXIT_MISTAKE`) with one line on
    stderr; anything else is a bug: its traceback, then a line saying so and where to report it, and exit 70
    (:data:`EXIT_BUG`).

    ``HYDRA_FULL_ERROR=1`` shows the traceback of a user's mistake too."""
    import traceback

    try:
        return func()
    except Exception as exc:
        message = user_error_message(exc)
        if message is not None and os.environ.get("HYDRA_FULL_ERROR") != "1":
            print(f"masklab {label}: error: {message}", file=sys.stderr, flush=True)
            raise CommandExit(getattr(exc, "exit_code", EXIT_MISTAKE), message) from None
        if message is not None:
            raise
        traceback.print_exc()
        print(f"masklab {label}: internal error: {type(exc).__name__} is a bug in masklab (or in your own "
              f"model/augment code if the traceback ends there), not a mistake in your input. "
              f"Please report it with the traceback above: {REPORT_BUGS}", file=sys.stderr, flush=True)
        raise CommandExit(EXIT_BUG, f"internal error: {type(exc).__name__}: {exc}") from None
