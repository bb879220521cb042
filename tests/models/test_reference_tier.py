"""`reference_tier`: a tier is validated against another model or precision the catalogue names, never itself."""

import pytest

from models.catalogue import CatalogueError, load_catalogue

HEAD = 'baseline = "premium"\n[workers.cpu]\nusd_per_hour = 0.1\n'
PREMIUM = ('[[tiers]]\nname = "premium"\nbackend = "openai"\nmodel = "big"\nbase_url = "http://x/v1"\n'
           'input_usd_per_1m = 1\noutput_usd_per_1m = 1\n')


def small(**fields) -> str:
    body = {"name": '"small"', "backend": '"vllm"', "model": '"packaged:smollm2-135m-instruct-w8a8"',
            "dtype": '"bfloat16"', "worker": '"cpu"', **fields}
    return "[[tiers]]\n" + "".join(f"{k} = {v}\n" for k, v in body.items())


def load(tmp_path, text):
    path = tmp_path / "tiers.toml"
    path.write_text(text)
    return load_catalogue(path)


def test_a_pre_quantised_tier_names_its_reference(tmp_path):
    cat = load(tmp_path, HEAD + small(reference_tier='"premium"', validation_rows=100) + PREMIUM)
    t = cat.tier("small")
    assert (t.reference_tier, t.validation_rows, t.validation_margin) == ("premium", 100, 0.05)
    # the full-precision model on a bigger worker is a reference too: same model name, another precision
    fp = small(name='"full"', model='"packaged:smollm2-135m-instruct"', dtype='"float32"')
    assert load(tmp_path, HEAD + small(reference_tier='"full"') + fp + PREMIUM).tier("small").reference_tier == "full"


@pytest.mark.parametrize("fields, message", [
    ({"reference_tier": '"small"'}, "never against itself"),
    ({"reference_tier": '"nope"'}, "reference_tier 'nope' is not a tier"),
    ({"quantization": '"fp8_per_channel"'}, "name the tier it is validated against"),
    ({"validation_margin": "1.5"}, "validation_margin"),
])
def test_a_reference_that_proves_nothing_is_refused(tmp_path, fields, message):
    with pytest.raises(CatalogueError, match=message):
        load(tmp_path, HEAD + small(**fields) + PREMIUM)


def test_a_copy_running_the_same_model_the_same_way_is_not_a_reference(tmp_path):
    twin = small(name='"twin"')
    with pytest.raises(CatalogueError, match="runs the same model the same way"):
        load(tmp_path, HEAD + small(reference_tier='"twin"') + twin + PREMIUM)
