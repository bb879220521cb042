import pytest

from models.catalogue import CatalogueError, load_catalogue


def test_default_catalogue_has_three_tiers_cheapest_first():
    cat = load_catalogue()
    assert cat.names == ["small", "mid", "premium"]
    assert cat.baseline_tier.name == "premium"
    assert [t.self_hosted for t in cat.tiers] == [True, True, False]
    assert cat.worker_usd_per_hour(cat.tier("small")) > 0
    # GPT-4o-class list prices: 1M in + 1M out
    assert cat.baseline_tier.token_cost_usd(1_000_000, 1_000_000) == pytest.approx(12.5)
    assert cat.judge is None and cat.judge_tier is None  # no judge: free-text shadow pairs stay unjudged


@pytest.mark.parametrize(
    "body, message",
    [
        ('baseline = "x"\n[[tiers]]\nname="a"\nbackend="openai"\nmodel="m"\nbase_url="u"\n'
         'input_usd_per_1m=1\noutput_usd_per_1m=1', "baseline 'x' is not a tier"),
        ('baseline = "a"\n[[tiers]]\nname="a"\nbackend="vllm"\nmodel="m"', "a vllm tier needs `worker`"),
        ('baseline = "a"\n[[tiers]]\nname="a"\nbackend="openai"\nmodel="m"', "needs base_url, input_usd_per_1m"),
        ('baseline = "a"\n[[tiers]]\nname="a"\nbackend="carrier-pigeon"\nmodel="m"', "tiers.0.backend"),
        ('baseline = "a"\n[[tiers]]\nname="a"\nbackend="openai"\nmodel="m"\nbase_url="u"\n'
         'input_usd_per_1m=-1\noutput_usd_per_1m=1', "greater than or equal to 0"),
        ("baseline = ", "not valid TOML"),
        ('baseline = "a"\njudge = "b"\n[[tiers]]\nname="a"\nbackend="openai"\nmodel="m"\nbase_url="u"\n'
         'input_usd_per_1m=1\noutput_usd_per_1m=1', "judge 'b' is not a tier"),
    ],
)
def test_invalid_catalogues_fail_with_the_file_and_the_reason(tmp_path, body, message):
    path = tmp_path / "cat.toml"
    path.write_text(body)
    with pytest.raises(CatalogueError) as err:
        load_catalogue(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(CatalogueError, match="cannot read catalogue"):
        load_catalogue(tmp_path / "nope.toml")


def test_engine_args_reach_the_vllm_engine_settings():
    from models.backends.vllm_offline import _engine_args
    from models.catalogue import Tier

    tier = Tier(name="big", backend="vllm", model="m", worker="h100",
                engine_args={"tensor_parallel_size": 4, "gpu_memory_utilization": 0.85})
    args = _engine_args(tier, "/models/m")
    assert args["tensor_parallel_size"] == 4 and args["gpu_memory_utilization"] == 0.85
    assert args["model"] == "/models/m" and args["disable_log_stats"] is False
