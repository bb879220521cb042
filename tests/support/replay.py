"""The quality demo's recorded answers as a two-tier replay catalogue (no model, no network): Mixtral-8x7B as the
cheap tier, GPT-4-1106 as premium, priced as in data/samples/gsm8k_tiers.toml."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
GSM8K = SAMPLES / "gsm8k.parquet"


def gsm8k_replay_catalogue(folder: Path) -> Path:
    path = folder / "tiers.toml"
    path.write_text(
        'baseline = "premium"\n'
        f'[[tiers]]\nname = "cheap"\nbackend = "replay"\nmodel = "mixtral"\nanswers = "{SAMPLES}/gsm8k_mixtral.parquet"\n'
        "input_usd_per_1m = 0.7\noutput_usd_per_1m = 0.7\n"
        f'[[tiers]]\nname = "premium"\nbackend = "replay"\nmodel = "gpt-4"\nanswers = "{SAMPLES}/gsm8k_gpt4.parquet"\n'
        "input_usd_per_1m = 10\noutput_usd_per_1m = 30\n")
    return path
