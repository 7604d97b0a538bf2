"""README.md is the door and docs/ the rooms: README stays short, every relative link in them
resolves (files and #anchors), every YAML snippet parses (a flow snippet validates as a flow),
and every `python -m etl` and `make` command they show exists with the options they show."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from etl.cli.main import build_parser
from etl.config.flows import Flow
from etl.config.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "bench" / "HISTORY.md"]
README_LINES = 250

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    plain = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(h) for h in _HEADING.findall(_FENCE.sub("", _text(page)))}


def _blocks(page: Path, kinds: tuple[str, ...]) -> list[str]:
    return [body for kind, body in _FENCE.findall(_text(page)) if kind in kinds]


def test_the_readme_is_a_door() -> None:
    lines = _text(README).count("\n")
    assert lines <= README_LINES, f"README.md has {lines} lines; keep it to {README_LINES} and move the rest to docs/"
    for section in ("## Two commands", "## The command line", "## Pointing it at real databases", "## Links"):
        assert section in _text(README)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for match in _LINK.finditer(_FENCE.sub("", _text(page))):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert broken == [], f"{page.name}: links that do not resolve: {broken}"


def test_every_yaml_snippet_parses_and_flow_snippets_validate() -> None:
    flows = 0
    for page in PAGES:
        for body in _blocks(page, ("yaml", "yml")):
            # A line of its own "…" marks lines left out of an excerpt.
            data = yaml.safe_load("\n".join(line for line in body.splitlines() if line.strip() not in ("…", "...")))
            if isinstance(data, dict) and {"flow", "source", "target", "key"} <= set(data):
                Flow.model_validate(data)
                flows += 1
    assert flows >= 1


def _commands(page: Path) -> list[str]:
    """`python -m etl ...` lines of a page's shell blocks, continuation lines joined."""
    out: list[str] = []
    for body in _blocks(page, ("", "sh", "bash", "shell")):
        for line in body.splitlines():
            code = line.split("  #")[0].rstrip()
            if re.search(r"(^|\s|/)python -m etl ", code):
                out.append(code[code.index("python -m etl ") + len("python -m etl "):])
            elif out and code.startswith(" ") and code.strip().startswith("["):
                out[-1] += " " + code.strip()
    return out


def test_every_command_shown_exists_with_its_options() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.choices and "run" in a.choices).choices  # noqa: SLF001
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE))
    shown = 0
    for page in PAGES:
        for command in _commands(page):
            words = shlex.split(command.replace("|", " ").replace("[", " ").replace("]", " "), posix=False)
            while words and words[0].startswith("--"):  # the options before the command: --mappings DIR
                assert words[0] in parser._option_string_actions, f"{page.name}: python -m etl {command}"  # noqa: SLF001
                words = words[2:]
            sub = subcommands.get(words[0])
            assert sub is not None, f"{page.name}: python -m etl {command}"
            if sub._subparsers is not None and len(words) > 1 and not words[1].startswith("-"):  # noqa: SLF001
                nested = next(a for a in sub._actions if a.choices).choices  # noqa: SLF001
                if words[1] in nested:
                    sub = nested[words[1]]
            known = {o for a in sub._actions for o in a.option_strings}  # noqa: SLF001
            options = {w.split("=")[0] for w in words if w.startswith("--")}
            assert options <= known, f"{page.name}: python -m etl {command}: unknown {sorted(options - known)}"
            shown += 1
        for body in _blocks(page, ("", "sh", "bash", "shell")):
            for target in re.findall(r"^\s*(?:[A-Z_]+=\S+ )*make ([a-z][\w-]*)", body, re.MULTILINE):
                assert target in targets, f"{page.name}: make {target}"
    assert shown >= 10
