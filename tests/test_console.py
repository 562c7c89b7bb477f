"""masklab's messages (logging -> rich console on stderr + Hydra's job log), progress bars, and how the
CLI tells a user's mistake (one line, exit 2) from a bug (traceback, a line saying so, exit 1).

The CLI runs in this process (``masklab.cli.main``, the ``cli`` fixture): its exit status and output are the same
there, without a subprocess's 8-11 s of imports.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from masklab import console
from masklab.cli import as_task, main, take_level_flags
from masklab.console import LOG_LEVEL_ENV, PROGRESS_ENV, logger, progress, setup_logging
from masklab.errors import UserError, run_reporting_errors


@pytest.fixture
def clean_logging(monkeypatch: pytest.MonkeyPatch):
    """Restore the root logger's handlers and masklab's levels after a test that configures logging."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    masklab_level = logging.getLogger("masklab").level
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    yield root
    root.handlers[:] = handlers
    root.setLevel(root_level)
    logging.getLogger("masklab").setLevel(masklab_level)
    console._console_level = logging.INFO
    console._console = None


def test_logger_names_are_under_masklab():
    assert logger("masklab.data.check").name == "masklab.data.check"
    assert logger("masklab").name == "masklab"
    assert logger("sweep").name == "masklab.sweep"


def test_messages_go_to_stderr_and_the_job_log_not_stdout(clean_logging, tmp_path: Path, capsys):
    # What Hydra's default job_logging installs: a console handler on stdout and the run folder's log file.
    job_log = tmp_path / "train.log"
    file_handler = logging.FileHandler(job_log)
    file_handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    clean_logging.handlers[:] = [logging.StreamHandler(sys.stdout), file_handler]
    setup_logging("info")
    logger("masklab.test").info("Wrote %s", "out/a.png")
    logger("masklab.test").warning("mask has %d unknown values", 3)
    file_handler.flush()
    out, err = capsys.readouterr()
    assert out == ""  # stdout is for results only
    assert err.splitlines() == ["Wrote out/a.png", "warning: mask has 3 unknown values"]
    assert job_log.read_text().splitlines() == ["[masklab.test][INFO] - Wrote out/a.png",
                                                "[masklab.test][WARNING] - mask has 3 unknown values"]
    assert file_handler in clean_logging.handlers
    setup_logging("info")  # idempotent: still one console handler
    assert sum(isinstance(h, console.ConsoleHandler) for h in clean_logging.handlers) == 1


def test_quiet_hides_info_on_the_console_but_the_job_log_keeps_it(clean_logging, tmp_path: Path, capsys):
    job_log = tmp_path / "job.log"
    file_handler = logging.FileHandler(job_log)
    clean_logging.handlers[:] = [file_handler]
    setup_logging("quiet")
    logger("masklab.test").info("imported 12 samples")
    logger("masklab.test").error("no such split")
    file_handler.flush()
    assert capsys.readouterr().err == "error: no such split\n"
    assert job_log.read_text().splitlines() == ["imported 12 samples", "no such split"]


def test_hydra_verbose_keeps_debug_in_the_job_log_only(clean_logging, tmp_path: Path, capsys):
    job_log = tmp_path / "job.log"
    file_handler = logging.FileHandler(job_log)
    clean_logging.handlers[:] = [file_handler]
    logging.getLogger("masklab").setLevel(logging.DEBUG)  # what `hydra.verbose=masklab` does before the task
    setup_logging("info")
    logger("masklab.test").debug("batch %d", 4)
    file_handler.flush()
    assert job_log.read_text() == "batch 4\n"
    assert capsys.readouterr().err == ""


def test_verbose_shows_debug_with_the_logger_name(clean_logging, capsys):
    clean_logging.handlers[:] = []
    setup_logging("verbose")
    logger("masklab.test").debug("batch %d", 4)
    assert capsys.readouterr().err == "[masklab.test] batch 4\n"


def test_level_from_env_and_a_bad_level_is_a_user_error(clean_logging, monkeypatch):
    monkeypatch.setenv(LOG_LEVEL_ENV, "quiet")
    assert setup_logging() == logging.WARNING
    with pytest.raises(UserError, match=r"log level 'loud': unknown; expected one of \['debug', 'error', 'info'"):
        console.parse_level("loud")


def test_level_flags_anywhere_are_removed_and_exported(clean_logging, monkeypatch):
    assert take_level_flags(["-q", "train", "model=fpn"]) == ["train", "model=fpn"]
    assert console.parse_level(None) == logging.WARNING
    assert take_level_flags(["train", "--verbose", "model=fpn"]) == ["train", "model=fpn"]
    assert console.parse_level(None) == logging.DEBUG
    with pytest.raises(SystemExit) as exc:
        take_level_flags(["-q", "train", "-v"])
    assert exc.value.code == 2


def test_progress_is_silent_off_a_terminal(clean_logging, capsys):
    clean_logging.handlers[:] = []
    setup_logging("info")
    assert list(progress(range(5), "Importing")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr() == ("", "")  # pytest's capture is not a terminal


def test_progress_renders_when_forced_and_nests(clean_logging, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "1")
    seen = []
    for outer in progress([1, 2, 3], "Writing report"):
        seen.extend(progress(iter("ab"), "Overlays"))  # no len(): counted without a total
        seen.append(outer)
    assert seen == ["a", "b", 1, "a", "b", 2, "a", "b", 3]
    out, err = capsys.readouterr()
    assert out == ""
    assert "Writing report" in err and "3/3" in err
    assert console._active is None  # the display is closed: the next bar may start


def test_progress_draws_on_a_terminal_unless_quiet_or_turned_off(clean_logging, monkeypatch):
    from rich.console import Console

    screen = io.StringIO()
    console._console = Console(file=screen, force_terminal=True, width=100)
    clean_logging.handlers[:] = []
    setup_logging("info")
    assert list(progress(range(3), "Checking")) == [0, 1, 2]
    assert "Checking" in screen.getvalue() and "3/3" in screen.getvalue()
    screen.truncate(0)
    setup_logging("quiet")
    assert list(progress(range(3), "Checking")) == [0, 1, 2]
    setup_logging("info")
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert list(progress(range(3), "Checking")) == [0, 1, 2]
    assert screen.getvalue().strip("\x00") == ""


def raise_key_error(cfg) -> None:
    """A command with a bug (used through as_task by the test below)."""
    return {"train": 1}[cfg["split"]]


def raise_user_error(cfg) -> None:
    raise UserError(f"split={cfg['split']}: not in the dataset; expected one of ['train']")


def test_a_bug_in_a_command_shows_its_traceback_and_says_it_is_a_bug(clean_logging, capsys):
    task = as_task(("demo",), "test_console:raise_key_error")
    with pytest.raises(SystemExit) as exc:
        task({"split": "val"})
    assert exc.value.code == 70  # EX_SOFTWARE: not 1 (a check's problems) nor 2 (a mistake)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'val'" in err
    assert 'return {"train": 1}[cfg["split"]]' in err  # the failing line of the command
    assert err.rstrip().splitlines()[-1].startswith(
        "masklab demo: internal error: KeyError is a bug in masklab (or in your own model/augment code")


def test_a_user_error_in_a_command_is_one_line(clean_logging, capsys):
    with pytest.raises(SystemExit) as exc:
        as_task(("demo",), "test_console:raise_user_error")({"split": "val"})
    assert exc.value.code == 2
    assert capsys.readouterr().err == "masklab demo: error: split=val: not in the dataset; expected one of ['train']\n"


def test_cli_user_error_exits_2_with_one_line(project, cli):
    res = cli("data", "import", "name=shapes", "images=nowhere", "masks=nowhere")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "masklab data import: error: images=nowhere: folder does not exist; format=folder needs it"]
    assert res.stdout == ""


def test_cli_bug_exits_70_with_traceback_and_bug_line(capsys):
    with pytest.raises(SystemExit) as exc:
        run_reporting_errors("demo", lambda: {}["val"])
    assert exc.value.code == 70
    lines = capsys.readouterr().err.rstrip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "KeyError: 'val'" in lines
    assert lines[-1].startswith("masklab demo: internal error: KeyError is a bug in masklab")


def test_bug_in_user_model_code_through_the_real_cli_shows_where(project, seed_store, cli):
    # A project's own model whose constructor has a bug: not a config mistake, so no one-line error.
    (project / "conf" / "model").mkdir(parents=True)
    (project / "broken_models.py").write_text(
        "from torch import nn\n\n\nclass Broken(nn.Module):\n"
        "    def __init__(self, num_classes: int):\n"
        "        super().__init__()\n"
        "        self.widths = {'train': 4}['val']\n")
    (project / "conf" / "model" / "broken.yaml").write_text("_target_: broken_models.Broken\n")
    seed_store(project)
    res = cli("train", "model=broken", "debug=fast")
    assert res.returncode == 70, res.stderr[-3000:]
    assert "Traceback (most recent call last)" in res.stderr
    assert "self.widths = {'train': 4}['val']" in res.stderr and "KeyError: 'val'" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("masklab train: internal error: KeyError is a bug")


def test_config_error_exits_2_and_bad_level_env_too(project, clean_logging, cli, monkeypatch):
    res = cli("data", "check", "data.bogus=1")
    assert res.returncode == 2
    assert "Key 'bogus' is not in struct" in res.stderr and "Traceback" not in res.stderr
    monkeypatch.setenv(LOG_LEVEL_ENV, "loud")
    res = cli("data", "check")
    assert res.returncode == 2
    assert res.stderr.startswith("masklab: error: log level 'loud': unknown")


def test_help_documents_levels_and_exit_status(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "-q, --quiet" in out and "-v, --verbose" in out and "MASKLAB_LOG_LEVEL" in out
    text = " ".join(out.split())  # one rule: 1 a check's problems, 2 a mistake, 70 a bug
    assert "1 a check found problems (data check, pipeline check); 2 a mistake in the input" in text
    assert "70 a bug in masklab or in your own model code" in text
