"""FAKE server: sleeps (never healthy), or exits with FAKE_VLLM_EXIT_CODE if set."""
import os
import sys
import time

if os.environ.get("FAKE_VLLM_EXIT_CODE"):
    print("fake vLLM: failing on purpose", flush=True)
    sys.exit(int(os.environ["FAKE_VLLM_EXIT_CODE"]))
while True:
    time.sleep(1)
