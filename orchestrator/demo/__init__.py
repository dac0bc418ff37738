"""Small models made offline for the demo stack and the tests: random-weight LLM, Whisper and VITS."""
