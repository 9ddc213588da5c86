"""The Examples sections of the public docstrings run and print what they show."""

import doctest

import pytest

from softmaxc import _cross_entropy, _derivatives, _softmax, testing

MODULES = [_softmax, _cross_entropy, _derivatives, testing]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
