"""models.pricing: the one place tokens and seconds become dollars."""

import numpy as np
import polars as pl
import pytest

from models.catalogue import load_catalogue
from models.pricing import TierPrice, api_price, cost_usd, tier_prices, worker_price

PREMIUM = load_catalogue().tier("premium")  # $2.50 in, $10 out, $1.25 cached, batch half price


def test_list_prices_with_cached_input_billed_at_the_cached_price():
    p = api_price(PREMIUM)
    assert cost_usd(p, 1_000_000, 0) == pytest.approx(PREMIUM.input_usd_per_1m)
    assert cost_usd(p, 0, 1_000_000) == pytest.approx(PREMIUM.output_usd_per_1m)
    # 400k of the 1M input tokens were prompt-cache reads
    expected = (0.6 * PREMIUM.input_usd_per_1m + 0.4 * PREMIUM.cached_input_usd_per_1m + PREMIUM.output_usd_per_1m)
    assert cost_usd(p, 1_000_000, 1_000_000, 400_000) == pytest.approx(expected)


def test_batch_prices_and_a_batch_without_a_cached_price_bills_cached_tokens_as_batch_input():
    p = api_price(PREMIUM, batch=True)
    assert cost_usd(p, 1_000_000, 1_000_000) == pytest.approx(
        PREMIUM.batch_input_usd_per_1m + PREMIUM.batch_output_usd_per_1m)
    no_cached = PREMIUM.model_copy(update={"batch_cached_input_usd_per_1m": None})
    q = api_price(no_cached, batch=True)
    assert cost_usd(q, 1_000_000, 0, 500_000) == pytest.approx(cost_usd(q, 1_000_000, 0))


def test_the_catalogue_prices_through_the_same_function():
    for args in [(1234, 567), (1234, 567, 200), (0, 0)]:
        assert PREMIUM.token_cost_usd(*args) == pytest.approx(cost_usd(api_price(PREMIUM), *args), abs=0)
    assert PREMIUM.token_cost_usd(1000, 10, batch=True) == pytest.approx(cost_usd(api_price(PREMIUM, True), 1000, 10))
    # cached tokens are clamped to the input tokens: never a negative input bill
    assert PREMIUM.token_cost_usd(100, 0, cached_input_tokens=500) == pytest.approx(
        cost_usd(api_price(PREMIUM), 100, 0, 100))


def test_worker_time_per_second_and_planning_price_per_token():
    w = worker_price("small", 0.36, tokens_per_s=500.0)
    assert cost_usd(w, seconds=3600.0) == pytest.approx(0.36)
    assert cost_usd(w, 250, 250) == pytest.approx(0.36 / 3600)  # 500 tokens at 500 tok/s = one second
    assert worker_price("small", 0.36).usd_per_input_token == 0.0  # no throughput: time only


def test_numbers_arrays_and_polars_expressions_price_alike():
    p = TierPrice("t", 2e-6, 8e-6, "test")
    ins, outs = np.array([10.0, 200.0, 0.0]), np.array([5.0, 0.0, 40.0])
    scalar = [cost_usd(p, i, o) for i, o in zip(ins, outs)]
    assert cost_usd(p, ins, outs).tolist() == pytest.approx(scalar)
    df = pl.DataFrame({"i": ins, "o": outs})
    assert df.select(cost_usd(p, pl.col("i"), pl.col("o")))["i"].to_list() == pytest.approx(scalar)


def test_tier_prices_follow_the_catalogue_order_and_throughput():
    cat = load_catalogue()
    prices = tier_prices(cat, self_hosted_tokens_per_s=500.0)
    assert [p.name for p in prices] == cat.names
    small = cat.tier("small")
    assert prices[0].usd_per_output_token == pytest.approx(cat.worker_usd_per_hour(small) / 3600 / 500)
    assert prices[-1].usd_per_output_token == pytest.approx(PREMIUM.output_usd_per_1m / 1e6)
