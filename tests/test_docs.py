"""The README and docs/ name only commands, config options and keys that exist (#27): every `masklab ...` line of a
fenced block and every inline `masklab ...` span is checked against the CLI's commands and the composed config of
its command, so the docs cannot go stale silently."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONF = REPO / "src" / "masklab" / "conf"
# Placeholders and shell in a documented line: the token is not checked.
PLACEHOLDER = re.compile(r"[<>$`]|\.\.\.|^\W*$")


def documented_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command text) of each `masklab ...` command the page shows: fenced lines and inline spans."""
    found: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            text = re.sub(r"^\s*(\$\s+)?(\.venv/bin/)?", "", line).split("  #", 1)[0].strip()
            if text.startswith("masklab ") and not text.split()[1].endswith(":"):  # not a printed message
                found.append((number, text))
        else:  # (`masklab train: error: ...` is a message, not a command)
            found += [(number, span) for span in re.findall(r"`(masklab [^`]+)`", line)
                      if not span.split()[1].endswith(":")]
    return found


def command_of(words: list[str]) -> tuple[tuple[str, ...], str | None, list[str]] | None:
    """(command words, its Hydra config name or None for a plain command or help, the rest); None: no command."""
    from masklab.cli import COMMANDS, PLAIN_COMMANDS

    for n in (2, 1):
        if tuple(words[:n]) in COMMANDS:
            return tuple(words[:n]), COMMANDS[tuple(words[:n])][0], words[n:]
    if tuple(words[:1]) in PLAIN_COMMANDS or words[:1] in (["--help"], ["-h"], ["help"]):
        return tuple(words[:1]), None, words[1:]
    return None


@cache
def key_problem(name: str, groups: tuple[str, ...], key: str) -> str | None:
    """Hydra's own answer to ``<key>=null`` on the command's config (with the line's group choices: a group may
    have no default): None when the key exists, else why not."""
    from masklab.config import compose

    try:
        compose(name, [*groups, f"{key}=null"])
    except Exception as exc:  # Hydra's "Key 'x' is not in struct", "Could not override 'x'"
        return f"{key}: {' '.join(str(exc).split())[:160]}"
    return None


def group_options(group: str) -> set[str] | None:
    """The options of config group ``group`` (masklab's conf/), None when it is not a group."""
    folder = CONF / group
    return {p.stem for p in folder.glob("*.yaml")} if folder.is_dir() else None


# A group option the user makes: any imported dataset (`data import` writes conf/data/<name>.yaml), a preset `tune`
# writes (conf/experiment/tuned-<data>.yaml), or a name the docs mark as the user's own (my_grid).
def users_own(group: str, option: str) -> bool:
    return (group == "data" or (group == "experiment" and option.startswith("tuned-"))
            or re.match(r"(my|your)[_-]", option) is not None)


def problems_of(text: str) -> list[str]:
    """What in one documented command does not exist."""
    from masklab.cli import MODEL_REF_COMMANDS

    words = [w for w in text.split()[1:] if w not in ("-q", "-v", "--quiet", "--verbose")]
    if not words or PLACEHOLDER.search(words[0]):  # `masklab <command> ...`
        return []
    found = command_of(words)
    if found is None:
        return [f"no command {' '.join(words[:2])!r}"]
    command, config_name, rest = found
    if config_name is None:
        if command == ("pipeline",) and rest and not PLACEHOLDER.search(rest[0]):
            from masklab.commands.pipeline import STAGES

            known = (*STAGES, "check", "--help", "-h")
            return [f"no pipeline stage {s!r}" for s in re.split(r"\\?[/|]", rest[0]) if s not in known]
        return []
    settings = [t.partition("=") for t in rest if "=" in t and not t.startswith(("-", "~", "+", "hydra"))]
    settings = [(k, v) for k, _, v in settings if re.fullmatch(r"[A-Za-z_][\w.]*", k)
                and not (command in MODEL_REF_COMMANDS and k == "model")]  # (the CLI's model=<ref>)
    out = []
    groups = []
    for key, value in settings:
        options = group_options(key)
        if options is None:
            continue
        for option in value.split(","):
            if PLACEHOLDER.search(option):  # `sweep=<preset>`: the other keys are checked with one of them
                groups.append(f"{key}={sorted(options)[0]}")
                continue
            if option == "null":
                continue
            if option not in options and not users_own(key, option):
                out.append(f"{key}={option}: not an option of {key} ({sorted(options)})")
            elif "," not in value:  # compose with it (a user's own option: with the group's first one)
                groups.append(f"{key}={option if option in options else sorted(options)[0]}")
    if out:
        return out
    return [problem for key, _ in settings if group_options(key) is None
            for problem in [key_problem(config_name, tuple(groups), key)] if problem]


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_documented_command_and_option_exists(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no project's conf/ beside masklab's
    stale = [f"{page.name}:{number}: `{text}`: {problem}" for number, text in documented_lines(page)
             for problem in problems_of(text)]
    assert not stale, "\n".join(stale)


def test_the_checker_finds_what_does_not_exist():
    assert problems_of("masklab tarin model=fpn") == ["no command 'tarin model=fpn'"]
    assert problems_of("masklab train model=unett")[0].startswith("model=unett: not an option of model")
    assert problems_of("masklab train trainer.max_epoch=3")[0].startswith("trainer.max_epoch: ")
    assert problems_of("masklab train model.encoder=resnet34 experiment=unet-resnet18_synthetic-96") == []
    assert problems_of("masklab evaluate model=models:/N/Production split=test") == []
    assert problems_of("masklab pipeline stage7") == ["no pipeline stage 'stage7'"]


def test_help_of_a_pipeline_stage_is_the_pipeline_usage(cli):
    """`masklab pipeline check --help` (the docs name it) prints the usage instead of refusing '--help'."""
    done = cli("pipeline", "check", "--help")
    assert done.returncode == 0 and "masklab pipeline check [rev=HEAD]" in done.stdout, done.stderr


def test_the_configuration_table_lists_every_group_and_option():
    """README's "Configuration" table names every config group of masklab's conf/ and every option of each
    (hydra/launcher's included), and nothing that is not one."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| group | options |"):]
    table = table[:table.index("\n\n")]
    cells = {}
    for row in table.splitlines()[2:]:
        head, options = row.split("|")[1:3]
        for group in re.findall(r"`([^`]+)`", head):
            cells[group] = options
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"}
    assert groups <= set(cells), sorted(groups - set(cells))
    for group in groups:
        for option in group_options(group):
            assert f"`{option}`" in cells[group], f"README's configuration table: {group} lacks `{option}`"
    for option in group_options("hydra/launcher"):
        assert f"hydra/launcher={option}" in cells["hydra"], option


def test_the_commands_table_lists_every_command_and_stage():
    """README's commands table names every command of the CLI (and every stage of `masklab pipeline`)."""
    from masklab.cli import COMMANDS, PLAIN_COMMANDS
    from masklab.commands.pipeline import STAGES

    text = (REPO / "README.md").read_text()
    table = text[text.index("| command | what it does |"):]
    table = table[:table.index("\n\n")]
    missing = [" ".join(w) for w in (*COMMANDS, *PLAIN_COMMANDS) if f"`masklab {' '.join(w)}" not in table]
    assert not missing, missing
    row = next(line for line in table.splitlines() if line.startswith("| `masklab pipeline prepare"))
    assert set(re.findall(r"[\w-]+", row.split("`")[1].removeprefix("masklab pipeline "))) == set(STAGES), row


def test_the_layout_names_every_package_and_module():
    """docs/development.md's "Layout" paragraph names every package and top-level module of src/masklab."""
    text = (REPO / "docs" / "development.md").read_text()
    layout = text[text.index("Layout: `src/masklab/`"):].split("\n\n")[0]
    names = [p.name + ("/" if p.is_dir() else "") for p in (REPO / "src" / "masklab").iterdir()
             if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")]
    missing = [n for n in names if f"`{n}`" not in layout]
    assert not missing, missing


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_links_lead_somewhere(page):
    """Every `](#anchor)` of a page names one of its headings (GitHub's slugs), every relative link a file of the
    repository."""
    text = page.read_text()
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"(?m)^#+ (.+)$", text)}
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert anchors <= slugs, sorted(anchors - slugs)
    for target in re.findall(r"\]\((?!#|https?:|mailto:)([^)#\s]+)", text):
        assert (page.parent / target).exists(), f"{page.name}: link to {target}, which does not exist"
