"""`skewless init`: scaffold a feature repository that works as written.

A template is a folder under `skewless/cli/templates/`: `skewless.yaml`, definition
files under `features/`, a `generate_data.py` and a `gitignore`. `init` copies it,
names the project after the folder, and runs the generator so that `data/` holds rows
up to the current hour: `skewless apply`, `skewless materialize-incremental` and
`skewless serve` then take the repository without edits, and the served values are
fresh. `examples/rides` is exactly what `skewless init --template rides` writes.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from skewless.cli.exit_codes import EXIT_OK
from skewless.core.config import CONFIG_FILE
from skewless.core.errors import DefinitionError
from skewless.core.names import IDENTIFIER_RULE, is_identifier

__all__ = ["TEMPLATES", "add_commands", "init_repo", "template_files"]

_TEMPLATE_ROOT = Path(__file__).resolve().parent / "templates"
#: The templates `skewless init --template` accepts.
TEMPLATES = ("rides", "minimal")
_PROJECT_LINE = re.compile(r"^project: *\S+", re.MULTILINE)
_GENERATOR = "generate_data.py"


def template_files(template: str) -> dict[str, Path]:
    """Returns a template's files: path in the new repository -> file in the package."""
    folder = _TEMPLATE_ROOT / template
    out: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(folder).as_posix()
        out[".gitignore" if relative == "gitignore" else relative] = path
    return out


def _project_name(folder: Path, given: str | None) -> str:
    if given is not None:
        if not is_identifier(given):
            raise DefinitionError(
                f"--project {given!r} is not a project name: use {IDENTIFIER_RULE}",
                reason="INVALID_PROJECT_NAME",
            )
        return given
    name = re.sub(r"[^a-z0-9_]+", "_", folder.name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"features_{name}".rstrip("_")
    return name[:63] if is_identifier(name[:63]) else "features"


def _generate(repo: Path) -> tuple[dict[str, int], datetime]:
    """Runs the repository's `generate_data.py` for data up to the current hour."""
    spec = importlib.util.spec_from_file_location("skewless_template_data", repo / _GENERATOR)
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    anchor: datetime = module.current_hour()
    counts: dict[str, int] = module.generate(repo / "data", anchor)
    return counts, anchor


def init_repo(
    folder: str | Path, *, template: str = "rides", project: str | None = None
) -> tuple[str, list[str], dict[str, int]]:
    """Writes a new feature repository from a template and generates its data.

    Args:
        folder: Where to create it (created if missing; may be an empty folder).
        template: One of `TEMPLATES`.
        project: The project name; by default the folder's name, made an identifier.

    Returns:
        The project name, the files written (relative to the folder) and the rows of
        each generated data file.

    Raises:
        DefinitionError: The folder already holds a repository (or a file the template
            would write), or the project name is not an identifier. Nothing is written.

    """
    if template not in TEMPLATES:
        raise DefinitionError(
            f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}",
            reason="UNKNOWN_TEMPLATE",
        )
    repo = Path(folder).resolve()
    if repo.exists() and not repo.is_dir():
        raise DefinitionError(
            f"{folder} is a file, not a folder: name a new or empty folder",
            reason="REPO_EXISTS",
        )
    if (repo / CONFIG_FILE).exists():
        raise DefinitionError(
            f"{folder} already holds a feature repository ({CONFIG_FILE}); nothing was "
            "written. Pick another folder, or delete it first to start over",
            reason="REPO_EXISTS",
        )
    files = template_files(template)
    taken = sorted(name for name in files if (repo / name).exists())
    if (repo / "data").exists():
        taken.append("data/")
    if taken:
        raise DefinitionError(
            f"{folder} already has {', '.join(taken)}; nothing was written. Pick an empty "
            "folder (skewless init never overwrites a file)",
            reason="REPO_EXISTS",
        )
    name = _project_name(repo, project)
    for relative, source in files.items():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative == CONFIG_FILE:
            text = _PROJECT_LINE.sub(f"project: {name}", source.read_text(), count=1)
            target.write_text(text)
        else:
            shutil.copyfile(source, target)
    counts, _ = _generate(repo)
    return name, list(files), counts


def _init(args: argparse.Namespace) -> int:
    name, files, counts = init_repo(args.dir, template=args.template, project=args.project)
    rows = ", ".join(f"data/{table}.parquet ({n:,} rows)" for table, n in counts.items())
    print(f"created feature repository {name!r} in {args.dir} from template {args.template!r}:")
    for relative in files:
        print(f"  {relative}")
    print(f"  {rows}, up to the current hour")
    print("next:")
    if Path(args.dir).resolve() != Path.cwd():
        print(f"  cd {args.dir}")
    print("  skewless apply                    # validate and register the definitions")
    print("  skewless materialize-incremental  # compute them into both stores")
    print("  skewless serve                    # serve them on 127.0.0.1:6566")
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `init` to the `skewless` parser's subcommands."""
    p = commands.add_parser(
        "init", help="create a working feature repository from a template, with data"
    )
    p.add_argument("dir", nargs="?", default=".", help="folder to create (default: .)")
    p.add_argument(
        "--template", choices=TEMPLATES, default="rides", help="what to start from (rides)"
    )
    p.add_argument("--project", help="project name (default: the folder's name)")
    p.set_defaults(func=_init)
