"""skewless.yaml settings that the server enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.core.config import load_repo_config
from skewless.core.errors import DefinitionError


def _repo(tmp_path: Path, server: str) -> Path:
    (tmp_path / "skewless.yaml").write_text(f"project: p\n{server}")
    return tmp_path


def test_entity_source_roots_default_to_the_repository(tmp_path: Path) -> None:
    config = load_repo_config(_repo(tmp_path, ""))
    assert config.entity_roots == (tmp_path.resolve(),)


def test_entity_source_roots_resolve_relative_to_the_repository(tmp_path: Path) -> None:
    server = "server:\n  entity_source_roots: [labels, ../shared, /srv/training]\n"
    config = load_repo_config(_repo(tmp_path, server))
    root = tmp_path.resolve()
    assert config.entity_roots == (root / "labels", root.parent / "shared", Path("/srv/training"))


@pytest.mark.parametrize("value", ["labels", "[1]", '[""]', "{a: b}"])
def test_entity_source_roots_must_be_a_list_of_folders(tmp_path: Path, value: str) -> None:
    with pytest.raises(DefinitionError, match="entity_source_roots"):
        load_repo_config(_repo(tmp_path, f"server:\n  entity_source_roots: {value}\n"))
