"""The API reference's examples are tests."""

import doctest
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_api_reference_examples():
    torch.manual_seed(0)
    res = doctest.testfile(str(DOCS / "api.md"), module_relative=False,
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 15 and res.failed == 0, res


def test_architecture_lists_every_export():
    import audio_repr

    text = (DOCS / "architecture.md").read_text()
    block = text.split("__init__.py", 1)[1].split("registry.py", 1)[0]
    missing = [n for n in audio_repr.__all__ if n not in block.replace(",", " ").split()]
    assert not missing, f"docs/architecture.md's __init__.py entry misses {missing}"


def test_readme_model_table_is_current():
    from audio_repr.cli import model_table_markdown

    readme = (DOCS.parent / "README.md").read_text()
    table = readme.split("<!-- models -->")[1].split("<!-- /models -->")[0].strip()
    assert table == model_table_markdown().strip(), "README model table is stale: run `audio-repr list --markdown`"
