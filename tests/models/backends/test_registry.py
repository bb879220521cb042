"""Callers reach backends through the registry; releasing engines never starts or imports one."""

import subprocess
import sys

import pytest

from models.backends import make_backend
from models.catalogue import load_catalogue


def test_releasing_engines_in_a_process_that_never_started_one_imports_no_engine():
    code = ("import sys; from models.backends import release_engines; release_engines(); "
            "print('vllm' in sys.modules, 'models.backends.vllm_offline' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_each_backend_kind_comes_from_the_registry():
    cat = load_catalogue()
    assert type(make_backend(cat.tier("premium"))).__name__ == "OpenAIBackend"
    bad = cat.tier("premium").model_copy(update={"backend": "carrier-pigeon"})
    with pytest.raises(ValueError, match="unknown backend 'carrier-pigeon'"):
        make_backend(bad)
