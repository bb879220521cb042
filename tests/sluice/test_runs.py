"""Run folders: the configuration a run is resumed under."""

import pyarrow as pa
import pyarrow.parquet as pq

from models.catalogue import Catalogue
from sluice.runs import catalogue_fingerprint


def replay_catalogue(answers):
    return Catalogue.model_validate({"baseline": "premium", "tiers": [
        {"name": "premium", "backend": "replay", "model": "gpt-4", "answers": str(answers),
         "input_usd_per_1m": 10, "output_usd_per_1m": 30}]})


def test_a_changed_replay_answers_file_is_a_different_configuration(tmp_path):
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"prompt": ["2+2?"], "response": ["4"]}), path)
    first = catalogue_fingerprint(replay_catalogue(path))
    assert catalogue_fingerprint(replay_catalogue(path)) == first  # same file, same settings: resumed
    pq.write_table(pa.table({"prompt": ["2+2?"], "response": ["5"]}), path)
    assert catalogue_fingerprint(replay_catalogue(path)) != first  # same path, new answers: a new run


def test_catalogue_settings_still_count(tmp_path):
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"prompt": ["2+2?"], "response": ["4"]}), path)
    cat = replay_catalogue(path)
    dearer = cat.model_copy(update={"tiers": [cat.tiers[0].model_copy(update={"input_usd_per_1m": 11.0})]})
    assert catalogue_fingerprint(dearer) != catalogue_fingerprint(cat)
