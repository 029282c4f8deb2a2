"""One helper for every optional import: the error says exactly what to install."""

import pytest

from gpubp import optional


def test_require_returns_the_module():
    import json

    assert optional.require("json", "none") is json


def test_require_names_the_package_and_the_extra():
    with pytest.raises(ImportError, match=r"^the TensorBoard callback needs tensorboardZ: pip "
                                          r"install 'gpubp\[tensorboard\]' \(No module named"):
        optional.require("tensorboardZ", "tensorboard", "the TensorBoard callback")
    with pytest.raises(ImportError, match=r"^X needs scikit-learn >= 1\.6: pip install "
                                          r"'gpubp\[sklearn\]'") as info:
        optional.require("sklearnZ.base", "sklearn", "X", "scikit-learn >= 1.6")
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(ImportError, match=r"^this feature needs pyarrowZ: pip install pyarrowZ "):
        optional.require("pyarrowZ", None)


def test_every_extra_named_in_the_code_exists_in_pyproject():
    """The extras that error messages tell users to install are real extras."""
    import pathlib
    import re
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = set()
    for path in (root / "gpubp").rglob("*.py"):
        named |= set(re.findall(r"require\(\s*\"[\w.]+\",\s*\"(\w+)\"", path.read_text()))
    assert named and named <= set(extras), named - set(extras)
