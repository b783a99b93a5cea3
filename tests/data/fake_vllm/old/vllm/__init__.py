"""FAKE vllm package (test double): an old vLLM without the V1 scheduler hook."""
__version__ = "0.5.0"
