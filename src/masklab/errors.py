"""Errors a user can act on: the CLI prints their message in one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (config value, file, dataset): the message names it and what was expected."""


class NotFoundError(UserError, LookupError):
    """Something the user named (a run, an artifact, a model version) does not exist.

    Also a LookupError, so code that looks a thing up and falls back when it is absent keeps working."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: the message names the epoch, the step, the batch's samples and the
    checkpoint of the last good weights (the usual causes are a learning rate too high or a broken sample)."""


class TrainingInterrupted(UserError):
    """Training was stopped by SIGTERM (a scheduler's pre-emption, ``kill``): a checkpoint was saved and the message
    says how to resume. The command exits with 143 (128 + SIGTERM), as a process ended by the signal would."""

    exit_code = 143
