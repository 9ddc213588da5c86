"""The examples users read first run as shown: the docstrings' Examples sections and the
README's example."""

import doctest
import pathlib
import re

import numpy as np
import pytest

from softmaxc import _cross_entropy, _derivatives, _softmax, testing

MODULES = [_softmax, _cross_entropy, _derivatives, testing]
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0


def test_readme_example(capsys):
    if not README.exists():
        pytest.skip("not run from a source checkout")
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    np.testing.assert_allclose(namespace["p"].sum(axis=-1), 1.0, rtol=1e-15)
    assert namespace["check_gradient"] is testing.check_gradient
    assert "OpenMP" in capsys.readouterr().out
    logits = namespace["logits"]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    assert namespace["loss"] == pytest.approx(-(log_p[0, 0] + log_p[1, 2]) / 2, rel=1e-14)
