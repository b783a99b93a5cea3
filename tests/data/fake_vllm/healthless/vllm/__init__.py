"""FAKE vllm package (test double): imports like a recent vLLM, but its server never gets healthy."""
__version__ = "0.99.0-fake"
