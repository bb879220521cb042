"""Prompts the router tests label: short everyday ones the cheap tier handles, and demanding ones it does not."""

EASY = ["hi there", "thanks a lot", "what is the capital of France?", "say hello to my friend",
        "translate 'cat' into German", "what colour is the sky?", "tell me a short joke", "hello!",
        "name a fruit", "who wrote Hamlet?", "what day comes after Monday?", "thank you, bye"]
HARD = ["Prove that there are infinitely many primes, step by step, with every lemma justified in detail.",
        "Write a Python function implementing a lock-free queue and prove its correctness under 3 threads.",
        "A train leaves at 3:15 going 72 km/h, another at 4:05 going 95 km/h over 410 km; solve for when they meet.",
        "Design the architecture of a distributed rate limiter for 10000 servers and analyse the trade-offs.",
        "Derive the equation of motion for a double pendulum and solve for small angles step by step.",
        "Implement a SQL query computing the 7-day rolling median of 4 columns and explain edge cases carefully.",
        "Compute the probability that 5 dice sum to 17, showing the working for each of the 3 cases.",
        "Refactor this 300-line Java class into 4 services; evaluate the migration risk and failure modes.",
        "Prove the integral of x^2 e^-x from 0 to infinity equals 2, showing each step of integration by parts.",
        "Write a Rust algorithm for 2-SAT in linear time and explain the proof of correctness in detail.",
        "Solve for x: 3x^2 - 17x + 4 = 0 and prove both roots are positive, step by step.",
        "Compare 3 consensus algorithms; evaluate their trade-offs under 5 failure modes with examples."]
