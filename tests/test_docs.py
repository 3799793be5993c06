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
