"""Write data/samples/prompts.parquet: the demo batch, written by hand for Sluice.

A nightly batch as teams send it: short classification and extraction rows, summaries, everyday Q&A, and a
minority of hard rows (multi-step maths, code, careful reasoning). Some rows repeat exactly, some repeat with
different case or spacing (exact dedup on normalised text catches those), and some are reworded near-duplicates
(left for the near/semantic dedup stages). Deterministic: running it twice writes the same file.

    python data/samples/make_sample.py
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

EASY = [
    "What is the capital of France?",
    "What is the capital of Japan?",
    "Translate 'good morning' into Spanish.",
    "Is the following review positive or negative? 'The battery died after two days.'",
    "Is the following review positive or negative? 'Great sound, fast shipping, would buy again.'",
    "Classify the sentiment of this tweet: 'Stuck in traffic again, wonderful start to Monday.'",
    "Give me a synonym for 'happy'.",
    "What colour do you get when you mix blue and yellow?",
    "How many days are there in a leap year?",
    "Name three fruits that are red.",
    "What is the boiling point of water in Celsius at sea level?",
    "Say hello in German.",
    "Which planet is known as the Red Planet?",
    "What is the opposite of 'ancient'?",
    "Spell the word 'necessary' backwards.",
    "Who wrote 'Romeo and Juliet'?",
    "What is 12 plus 30?",
    "Extract the email address from: 'Contact Maria at maria.lopez@example.org for details.'",
    "Extract the date from: 'The invoice is due on 14 March 2025.'",
    "Extract the city from: 'Our new office opens in Lisbon next spring.'",
    "Label this support ticket as billing, technical or other: 'I was charged twice this month.'",
    "Label this support ticket as billing, technical or other: 'The app crashes when I open settings.'",
    "Label this support ticket as billing, technical or other: 'Can I change my username?'",
    "Is a tomato a fruit or a vegetable?",
    "Write a one-line greeting for a birthday card.",
    "What language is spoken in Brazil?",
    "Convert 5 kilometres to metres.",
    "What does CPU stand for?",
    "Give a title for a blog post about houseplants.",
    "Respond with yes or no: is the Pacific the largest ocean?",
    "What is the plural of 'mouse'?",
    "Name the primary colours.",
    "Which animal is known as the king of the jungle?",
    "Tell me a short joke about cats.",
    "What is the chemical symbol for gold?",
    "How many legs does a spider have?",
    "What is the freezing point of water in Fahrenheit?",
    "Suggest a name for a golden retriever puppy.",
    "What is the first month of the year?",
    "Rewrite in lowercase: 'PLEASE CALL ME BACK'.",
    "Categorise 'banana' as fruit, vegetable or grain.",
    "What is the square root of 81?",
    "Which continent is Kenya in?",
    "Give me an antonym for 'generous'.",
    "What is the tallest mountain on Earth?",
    "Thank a colleague for covering your shift, in one sentence.",
    "Is 17 a prime number?",
    "What does 'FAQ' stand for?",
    "Name a mammal that can fly.",
    "What day comes after Wednesday?",
]

MEDIUM = [
    "Summarise in two sentences: 'The city council approved a new bike lane network on Tuesday. The plan adds "
    "40 km of protected lanes over three years, funded by a mix of federal grants and parking revenue. Local "
    "businesses raised concerns about losing parking spaces, while cycling groups welcomed the decision.'",
    "Summarise this email in one sentence: 'Hi team, the quarterly review moves from Thursday to Friday at 10am "
    "because the projector in room B is being repaired. Please bring your updated slides. Thanks, Priya.'",
    "Write a short product description for a stainless steel water bottle that keeps drinks cold for 24 hours.",
    "Explain the difference between weather and climate to a ten-year-old.",
    "List four tips for getting better sleep.",
    "Write a polite reply declining a meeting invitation because of a scheduling conflict.",
    "Extract the product name, price and quantity from: 'Order #5512: 3 x Wireless Mouse at $24.99 each.'",
    "Extract all people and organisations from: 'Satya Nadella spoke with the European Commission about "
    "Microsoft's cloud plans.'",
    "Turn these notes into a short paragraph: met supplier; prices up 8%; delivery moved to June; need approval.",
    "Give three reasons why someone might choose to learn a second language.",
    "Describe how photosynthesis works in simple terms.",
    "What are the main causes of inflation?",
    "Write a haiku about autumn rain.",
    "Explain what an API is, with an everyday analogy.",
    "Summarise the plot of 'Cinderella' in three sentences.",
    "What are the pros and cons of working from home?",
    "Suggest a three-day itinerary for a first visit to Rome.",
    "Rewrite this sentence to sound more formal: 'Hey, can you send me that report thing by tomorrow?'",
    "Explain what a credit score is and why it matters.",
    "Draft a two-sentence apology to a customer whose package arrived late.",
    "What is the difference between a virus and a bacterium?",
    "Give me a simple recipe for pancakes.",
    "Explain the rules of tic-tac-toe.",
    "Write a short motivational message for a team before a product launch.",
    "Classify each of these as a mammal, bird or fish: salmon, eagle, dolphin, sparrow.",
    "Explain what compound interest is with a small example.",
    "Summarise the key benefits of regular exercise.",
    "Describe the water cycle in four steps.",
    "What should I pack for a weekend hiking trip?",
    "Explain why the sky is blue.",
    "Convert this list into a comma-separated line: apples, pears; plums / cherries.",
    "Write a short bio for a freelance graphic designer named Tom.",
    "What is machine learning, in two sentences?",
    "Give three examples of renewable energy sources and one advantage of each.",
    "Explain the difference between 'affect' and 'effect'.",
    "Write a tweet announcing a new coffee shop opening on Main Street.",
    "Describe the main features of a good resume.",
    "Why do leaves change colour in autumn?",
    "Explain how a bill becomes a law in the United States, briefly.",
    "Write a friendly reminder that the office kitchen will be cleaned on Friday.",
]

HARD = [
    "A train leaves at 14:10 and travels 180 km at 72 km/h, then waits 12 minutes and travels another 96 km at "
    "64 km/h. At what time does it arrive? Show your reasoning step by step.",
    "Prove that the square root of 2 is irrational.",
    "Write a Python function that returns the longest palindromic substring of a string, and explain its time "
    "complexity.",
    "Write a SQL query that returns, for each customer, their three most recent orders, given tables "
    "customers(id, name) and orders(id, customer_id, created_at, total).",
    "A store sells pens at 3 for $2 and notebooks at $3.50 each. Ana buys 14 pens and 5 notebooks and pays with "
    "a $50 bill. How much change does she get? Explain each step.",
    "Explain the CAP theorem and give a concrete example of a system that chooses availability over consistency.",
    "Compare quicksort and mergesort: average and worst-case complexity, memory use, stability, and when you "
    "would choose each.",
    "Write a Rust function that parses a line like 'key=value; key2=value2' into a HashMap, handling malformed "
    "pairs gracefully.",
    "If all bloops are razzies and some razzies are lazzies, can we conclude that some bloops are lazzies? "
    "Explain the logic carefully.",
    "Design a rate limiter that allows 100 requests per minute per user across several servers. Discuss the "
    "data structures, consistency trade-offs and failure modes.",
    "Solve for x and y: 3x + 2y = 16 and 5x - y = 18. Show the working.",
    "Explain how transformers use self-attention, including the role of queries, keys and values, and why "
    "positional information is needed.",
    "A company's revenue grew 12% in year one, fell 5% in year two and grew 20% in year three. What is the "
    "overall percentage change and the compound annual growth rate? Show the calculation.",
    "Write a bash script that finds the ten largest files under a directory, prints their sizes in human-readable "
    "form, and skips files it cannot read.",
    "Analyse the ethical trade-offs of using facial recognition in public spaces, giving arguments on both sides "
    "and a reasoned conclusion.",
    "Explain why the expected number of coin flips to get two heads in a row is 6. Derive it.",
    "Refactor this code to remove duplication and explain your changes: def area_sq(s): return s*s\n"
    "def area_rect(w, h): return w*h\ndef area_sq2(s): return s**2",
    "Write a detailed plan for migrating a monolithic web application to microservices, including sequencing, "
    "data ownership, testing and rollback.",
    "Given a list of meeting intervals, write an algorithm to find the minimum number of rooms required. Provide "
    "code and prove its correctness.",
    "What is the probability that in a group of 23 people at least two share a birthday? Explain the method and "
    "compute the value.",
    "Explain the difference between optimistic and pessimistic locking in databases and when each is appropriate, "
    "with examples of failure cases.",
    "Write a JavaScript debounce function with a cancel method and explain how closures make it work.",
    "A tank is filled by pipe A in 6 hours and by pipe B in 9 hours, and drained by pipe C in 12 hours. With all "
    "three open, how long does it take to fill the tank? Show the reasoning.",
    "Critically evaluate the claim that remote work reduces productivity, citing the kinds of evidence that "
    "would support or refute it.",
    "Implement binary search in Python that returns the leftmost index of a target in a sorted list with "
    "duplicates, and list the edge cases you tested.",
]

# Rows sent again verbatim, and rows sent again with different case or spacing: exact dedup on normalised
# text answers both kinds from their first occurrence.
EXACT_REPEATS = [
    "What is the capital of France?",
    "What is the capital of France?",
    "Is a tomato a fruit or a vegetable?",
    "Tell me a short joke about cats.",
    "Explain why the sky is blue.",
    "Write a haiku about autumn rain.",
    "Give me a simple recipe for pancakes.",
    "Prove that the square root of 2 is irrational.",
    "Label this support ticket as billing, technical or other: 'I was charged twice this month.'",
    "What is machine learning, in two sentences?",
    "Which planet is known as the Red Planet?",
    "Solve for x and y: 3x + 2y = 16 and 5x - y = 18. Show the working.",
]
CASE_SPACE_REPEATS = [
    "what is the capital of france?",
    "  Explain why the sky is blue.  ",
    "WHAT IS THE CHEMICAL SYMBOL FOR GOLD?",
    "Give me a synonym for  'happy'.",
    "How many legs does a spider  have?",
    "List four tips for getting better\nsleep.",
]
# Reworded repeats: not equal after normalisation, so exact dedup keeps them; near/semantic stages should not.
NEAR_REPEATS = [
    "What's the capital of France?",
    "What is the capital city of Japan?",
    "Give three tips for getting better sleep.",
    "Explain, simply, why the sky is blue.",
    "Tell me a short joke about dogs.",
    "Is the following review positive or negative? 'The battery died after three days.'",
    "Translate 'good night' into Spanish.",
    "Summarise the plot of 'Cinderella' in two sentences.",
    "What is 12 plus 31?",
    "Write a haiku about spring rain.",
]

SYSTEM_SUPPORT = "You are a concise support assistant. Answer in at most two sentences."


def build_rows(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    for text in EASY:
        rows.append({"prompt": text, "system": None, "max_tokens": 48})
    for text in MEDIUM:
        rows.append({"prompt": text, "system": None, "max_tokens": 96})
    for text in HARD:
        rows.append({"prompt": text, "system": None, "max_tokens": 160})
    # a repeat asks for the same answer length as its original (a different max_tokens is a different request)
    budget = {" ".join(r["prompt"].lower().split()): r["max_tokens"] for r in rows}
    for text in EXACT_REPEATS + CASE_SPACE_REPEATS + NEAR_REPEATS:
        rows.append({"prompt": text, "system": None, "max_tokens": budget.get(" ".join(text.lower().split()), 48)})
    # Support tickets carry a system prompt: a ticket sent with and without it is not the same request.
    for row in rows:
        if row["prompt"].startswith("Label this support ticket"):
            row["system"] = SYSTEM_SUPPORT
    rows.append({"prompt": EASY[20], "system": None, "max_tokens": 48})
    rng.shuffle(rows)
    for i, row in enumerate(rows):
        row["id"] = f"s{i:04d}"
    return rows


def main(out: Path = Path(__file__).with_name("prompts.parquet")) -> Path:
    rows = build_rows()
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "prompt": pa.array([r["prompt"] for r in rows], pa.string()),
            "system": pa.array([r["system"] for r in rows], pa.string()),
            "max_tokens": pa.array([r["max_tokens"] for r in rows], pa.int32()),
        }
    )
    pq.write_table(table, out)
    print(f"wrote {table.num_rows} rows to {out}")
    return out


if __name__ == "__main__":
    main()
