"""Errors a user can act on: the CLI prints their message in one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (config value, file, dataset): the message names it and what was expected."""
