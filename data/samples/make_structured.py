"""Write the structured-output and chat demo datasets, written by hand for Sluice. Deterministic.

    data/samples/reviews.parquet        24 product reviews: extract sentiment, topic and a star rating as JSON
    data/samples/review_schema.json     the JSON Schema every answer must satisfy (`sluice run --schema`)
    data/samples/chats.parquet          8 support conversations in the OpenAI chat format (`messages`); two
                                        differ only in an earlier turn (never deduplicated), one repeats exactly

    python data/samples/make_structured.py
    sluice run data/samples/reviews.parquet --schema data/samples/review_schema.json
    sluice run data/samples/chats.parquet
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "topic": {"enum": ["battery", "shipping", "price", "quality", "support", "other"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["sentiment", "topic", "stars"],
    "additionalProperties": False,
}

REVIEWS = [
    "The battery died after two days. Very disappointed.",
    "Arrived a day early and well packed. Great service!",
    "Way too expensive for what you get.",
    "Solid build, the hinge feels like it will last years.",
    "Support never answered my emails about the refund.",
    "Battery lasts the whole weekend, impressive.",
    "It works. Nothing special, nothing wrong.",
    "The box was crushed and the screen was cracked on arrival.",
    "Cheaper than the competition and just as good.",
    "The stitching came apart after one wash.",
    "The support agent fixed my problem in five minutes.",
    "Charging takes forever and it drains overnight.",
    "Delivery took three weeks, with no tracking updates.",
    "Worth every penny, I would buy it again at twice the price.",
    "The colour is slightly different from the photos.",
    "Feels premium, heavy in a good way.",
    "I was charged twice and nobody at the help desk could explain why.",
    "Average product at an average price.",
    "The battery swelled up after a month, dangerous.",
    "Fast shipping, but the instructions were missing.",
    "Cheap plastic, it snapped the first time I used it.",
    "Lovely gift, my sister was thrilled.",
    "Overpriced. The older model was better and cost less.",
    "Customer service replaced it without any questions.",
]

SYSTEM = "You are a customer support assistant for an online electronics shop. Answer briefly."


def chat(*turns: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": "system", "content": SYSTEM}] + [
        {"role": roles[i % 2], "content": t} for i, t in enumerate(turns)
    ]


CHATS = [
    chat("My order 1182 has not arrived.", "Sorry to hear that. When did you place it?", "Two weeks ago. What now?"),
    chat("My order 2291 has not arrived.", "Sorry to hear that. When did you place it?", "Two weeks ago. What now?"),
    chat("My order 1182 has not arrived.", "Sorry to hear that. When did you place it?", "Two weeks ago. What now?"),
    chat("Do you ship to Canada?"),
    chat("How do I reset my headphones?", "Hold the power button for ten seconds.", "It did not work. Now what?"),
    chat("Can I return an opened laptop?"),
    chat("My charger is making a buzzing noise.", "Is it the original charger?", "Yes, it came in the box."),
    chat("What is your warranty period?", "Two years on all electronics.", "Does it cover water damage?"),
]


def main(folder: Path = Path(__file__).parent) -> None:
    (folder / "review_schema.json").write_text(json.dumps(SCHEMA, indent=2) + "\n")
    prompts = [f"Extract the sentiment, the topic and a star rating (1-5) of this product review as JSON.\n"
               f"Review: {r}" for r in REVIEWS]
    pq.write_table(pa.table({"id": [f"rev-{i:02d}" for i in range(len(prompts))], "prompt": prompts,
                             "max_tokens": pa.array([48] * len(prompts), pa.int32())}), folder / "reviews.parquet")
    pq.write_table(pa.table({"id": [f"chat-{i}" for i in range(len(CHATS))], "messages": CHATS,
                             "max_tokens": pa.array([64] * len(CHATS), pa.int32())}), folder / "chats.parquet")
    print(f"wrote {len(prompts)} reviews, the schema and {len(CHATS)} chats to {folder}")


if __name__ == "__main__":
    main()
