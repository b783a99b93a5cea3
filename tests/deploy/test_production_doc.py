"""docs/production.md: linked from the README, its files exist, its commands parse.

Every `pals ...` command in its bash blocks names a real subcommand and options `pals` has, so
a newcomer copying them gets no 'unrecognized arguments' (values are theirs to adapt)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "production.md"


def _subparsers():
    from pals.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def _bash_commands(text: str) -> list[list[str]]:
    """The simple commands of the page's bash blocks, as word lists (split at && || ; & |)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            current: list[str] = []
            for token in lexer:
                if token and set(token) <= set("&|;()<>"):
                    commands.append(current)
                    current = []
                else:
                    current.append(token)
            commands.append(current)
    return [c for c in commands if c]


def test_readme_links_the_production_page():
    assert "(docs/production.md)" in (ROOT / "README.md").read_text()


def test_every_deploy_file_the_page_names_exists():
    named = set(re.findall(r"(?<![\w/])(deploy/[\w./-]+\w)", DOC.read_text()))
    assert len(named) >= 8
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"docs/production.md names missing files: {missing}"


def test_every_pals_command_in_the_page_parses():
    subparsers = _subparsers()
    checked = 0
    for words in _bash_commands(DOC.read_text()):
        command = " ".join(words)
        # `pals` the command (not the user or group of that name): first word, after sudo, or a path.
        starts = [i for i, w in enumerate(words)
                  if w.endswith("/bin/pals") or (w == "pals" and (i == 0 or words[i - 1] in ("sudo", "-E")))]
        if not starts:
            continue
        sub, *args = words[starts[0] + 1:]
        assert sub in subparsers, f"{command!r}: no subcommand {sub!r}"
        options = {s for action in subparsers[sub]._actions for s in action.option_strings}
        for arg in args:
            if arg == "--":
                break  # the rest goes to vLLM
            if arg.startswith("--"):
                assert arg.split("=", 1)[0] in options, f"{command!r}: pals {sub} has no {arg}"
        checked += 1
    assert checked >= 6
