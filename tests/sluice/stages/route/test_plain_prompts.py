"""`sluice route` on a plain prompt file: no `status` column, and real prompts' odd characters."""

import numpy as np
import pyarrow as pa

from sluice.config import RouterSettings
from sluice.stages.route.assign import heuristic_route
from sluice.stages.route.features import TEXT_FEATURES, text_features

TIERS = ["small", "mid", "premium"]


def test_heuristic_route_treats_every_row_as_pending_without_status():
    out = heuristic_route(pa.table({"prompt": ["What is the capital of France?",
                                               "Prove that the square root of 2 is irrational."]}), TIERS,
                          RouterSettings())
    assert out["tier"].to_pylist() == ["small", "premium"]
    assert out["route_reason"].to_pylist()[1].startswith("heuristic: intent=math")


def test_non_ascii_digits_count_as_no_number_in_the_largest_number():
    # ShareGPT has prompts with mathematical bold digits: `\d` matches them, float parsing does not
    x = text_features(["Step 𝟭: add 𝟮 apples", "I have 12 apples and 𝟯 pears"])
    col = TEXT_FEATURES.index("log_max_number")
    assert x[0, col] == 0.0
    assert np.isclose(x[1, col], np.log10(13.0))
