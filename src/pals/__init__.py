"""PALS: power-aware LLM serving.

Makes the GPU power cap a runtime knob, tuned jointly with the serving
engine's batch cap, so a node meets its throughput target at the best tokens
per joule while staying under a power budget that may change at any moment.
"""

__version__ = "0.1.0"
