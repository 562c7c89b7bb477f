"""masklab's messages and progress bars, usable from any layer (no Hydra here).

- Messages go through Python ``logging`` under the ``masklab`` logger: ``logger(__name__).info(...)``.
  They propagate to the root logger, so Hydra's job log file (``<run folder>/<task>.log``) keeps them.
- ``setup_logging`` (called by the CLI once Hydra has configured logging) puts one console handler
  on the root logger: rich, on stderr. stdout carries only results: ``result(...)`` for a command's
  outcome (what it wrote, the run or version it made), tables and reports the user asked for.
- Levels: ``quiet`` (warnings and errors), ``info`` (default), ``verbose`` (debug); set by
  ``masklab -q|-v`` or ``MASKLAB_LOG_LEVEL``. The job log keeps info messages even when quiet.
- ``progress(...)`` draws a rich bar on a terminal; it is silent when quiet or when stderr is not a
  terminal (tests, CI, log files), unless ``MASKLAB_PROGRESS=1`` forces it (``0`` turns it off).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

LOG_LEVEL_ENV = "MASKLAB_LOG_LEVEL"
PROGRESS_ENV = "MASKLAB_PROGRESS"
ROOT_LOGGER = "masklab"
RESULT_MARK = "masklab_result"  # LogRecord attribute of a result(): already on stdout, not shown again
LEVELS = {"quiet": logging.WARNING, "info": logging.INFO, "verbose": logging.DEBUG,
          "debug": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR}

T = TypeVar("T")

_console: Console | None = None
_console_level: int = logging.INFO
_active: Progress | None = None  # the bar being drawn; nested progress() calls add a row to it


def logger(name: str) -> logging.Logger:
    """The logger for a module (``__name__``) or a short name, always under ``masklab``."""
    if name != ROOT_LOGGER and not name.startswith(ROOT_LOGGER + "."):
        name = f"{ROOT_LOGGER}.{name}"
    return logging.getLogger(name)


def parse_level(level: int | str | None) -> int:
    """A logging level from a number, a name (quiet, info, verbose, debug, warning, error) or ``MASKLAB_LOG_LEVEL``."""
    if level is None:
        level = os.environ.get(LOG_LEVEL_ENV) or "info"
    if isinstance(level, int):
        return level
    key = level.strip().lower()
    if key not in LEVELS:
        from masklab.errors import UserError

        raise UserError(f"log level {level!r}: unknown; expected one of {sorted(LEVELS)}")
    return LEVELS[key]


def stderr_console() -> Console:
    """The one rich console on stderr that messages and progress bars share (so messages print above a bar)."""
    global _console
    if _console is None:
        from rich.console import Console

        # soft_wrap: a path or message is never cut into lines (tests and users grep for them)
        _console = Console(stderr=True, soft_wrap=True, highlight=False)
    return _console


class ConsoleHandler(logging.Handler):
    """Messages the way a command-line tool prints them: the text, prefixed with ``warning:``/``error:``."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, RESULT_MARK, False):
            return
        try:
            from rich.text import Text

            if record.levelno >= logging.ERROR:
                prefix, style = "error: ", "bold red"
            elif record.levelno >= logging.WARNING:
                prefix, style = "warning: ", "yellow"
            elif record.levelno < logging.INFO:
                prefix, style = f"[{record.name}] ", "dim"
            else:
                prefix, style = "", ""
            text = prefix + record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            stderr_console().print(Text(text, style=style), soft_wrap=True)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def result(text: str, name: str = ROOT_LOGGER) -> None:
    """Print a command's outcome (what it wrote, the run or version it made, a report) on stdout, even when
    quiet, and keep it in the job log; the console handler skips it, so a terminal shows it once."""
    print(text, flush=True)
    logger(name).info(text, extra={RESULT_MARK: True})


def setup_logging(level: int | str | None = None) -> int:
    """Route messages to the console (rich, stderr) at ``level`` and keep them flowing to Hydra's job log.

    Replaces plain console handlers on the root logger (Hydra's default prints to stdout, which is
    for results) with one ``ConsoleHandler``; file handlers stay. Idempotent. Returns the level."""
    global _console_level
    level = parse_level(level)
    _console_level = level
    root = logging.getLogger()
    for handler in list(root.handlers):
        streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        plain_console = type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in streams
        if isinstance(handler, ConsoleHandler) or plain_console:
            root.removeHandler(handler)
    handler = ConsoleHandler(level)
    root.addHandler(handler)
    # The masklab logger decides what is recorded (info even when quiet: the job log keeps it; debug when
    # Hydra's `hydra.verbose=masklab` asked for it); the console handler decides what is shown.
    masklab = logging.getLogger(ROOT_LOGGER)
    masklab.setLevel(min(level, logging.INFO, masklab.getEffectiveLevel()))
    return level


def console_level() -> int:
    """The level the console shows (set by ``setup_logging``): above INFO means quiet."""
    return _console_level


def progress_enabled() -> bool:
    """Whether ``progress`` draws: forced by ``MASKLAB_PROGRESS`` (1/0), else on a terminal unless quiet."""
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _console_level <= logging.INFO and stderr_console().is_terminal


def progress(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while drawing a progress bar labelled ``description`` (see ``progress_enabled``).

    ``total`` defaults to ``len(iterable)`` when it has one; without it the bar counts items only.
    A ``progress`` inside another adds a row to the outer bar instead of starting a second display."""
    global _active
    if not progress_enabled():
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    outer = _active is None
    if outer:
        _active = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), console=stderr_console(), transient=False)
        _active.start()
    bar = _active
    task = bar.add_task(description, total=total)
    try:
        for item in iterable:
            yield item
            bar.advance(task)
    finally:
        if outer:
            bar.stop()
            _active = None
        else:
            bar.remove_task(task)


def quiet_third_party() -> None:
    """Drop third-party noise that says nothing about the user's run (ads, internal deprecations)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning's use of a torch internal
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # num_workers=0 is our default

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage().lower()

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoTips())
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())


def duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``12 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
