"""vLLM /metrics parsing: the real captured page, old names, windows, bad pages, bad URLs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pals.errors import EngineUnreachable
from pals.node.vllm_metrics import Histogram, MetricsScraper, parse_metrics, window

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "metrics-sample-vllm-0.32-cpu.txt"


def test_real_page_from_vllm_032():
    m = parse_metrics(FIXTURE.read_text(), time_s=10.0)
    # Values read off the captured page (one 8-token prompt, 16 tokens generated).
    assert m.generation_tokens_total == 16.0
    assert m.prompt_tokens_total == 8.0
    assert m.requests_running == 0 and m.requests_waiting == 0
    assert m.kv_cache_usage == 0.0
    assert m.requests_finished_total == 1.0  # finished_reason="length"
    assert m.preemptions_total == 0.0
    assert m.model_names == ("tiny-llama",)
    assert {"ttft", "itl", "tpot", "e2e", "prompt_len", "output_len"} <= set(m.histograms)
    ttft = m.histograms["ttft"]
    assert ttft.count == 1.0 and ttft.buckets[-1][0] == float("inf")
    assert m.histograms["output_len"].mean == 16.0


def _page(gen, prompt, running, waiting, kv_name="vllm:kv_cache_usage_perc",
          tpot_name="vllm:request_time_per_output_token_seconds", ttft_buckets=(0, 0, 0), engines=("0",)):
    """A hand-written page in vLLM's layout: one TYPE line per family, one series per engine."""
    families = {
        "vllm:generation_tokens_total": ("counter", ["{n}{{{lab}}} " + str(gen)]),
        "vllm:prompt_tokens_total": ("counter", ["{n}{{{lab}}} " + str(prompt)]),
        "vllm:num_requests_running": ("gauge", ["{n}{{{lab}}} " + str(running)]),
        "vllm:num_requests_waiting": ("gauge", ["{n}{{{lab}}} " + str(waiting)]),
        kv_name: ("gauge", ["{n}{{{lab}}} 0.25"]),
        "vllm:time_to_first_token_seconds": ("histogram", [
            '{n}_bucket{{{lab},le="0.1"}} ' + str(ttft_buckets[0]),
            '{n}_bucket{{{lab},le="0.5"}} ' + str(ttft_buckets[1]),
            '{n}_bucket{{{lab},le="+Inf"}} ' + str(ttft_buckets[2]),
            "{n}_count{{{lab}}} " + str(ttft_buckets[2]),
            "{n}_sum{{{lab}}} 1.0",
        ]),
        tpot_name: ("histogram", [
            '{n}_bucket{{{lab},le="0.05"}} 1', '{n}_bucket{{{lab},le="+Inf"}} 1',
            "{n}_count{{{lab}}} 1", "{n}_sum{{{lab}}} 0.01",
        ]),
    }
    lines = []
    for name, (kind, templates) in families.items():
        lines.append(f"# TYPE {name} {kind}")
        for e in engines:
            lab = f'engine="{e}",model_name="m"'
            lines += [t.format(n=name, lab=lab) for t in templates]
    return "\n".join(lines) + "\n"


def test_old_metric_names_are_accepted():
    m = parse_metrics(_page(5, 3, 2, 1, kv_name="vllm:gpu_cache_usage_perc", tpot_name="vllm:time_per_output_token_seconds"))
    assert m.kv_cache_usage == 0.25
    assert "tpot" in m.histograms


def test_engines_are_summed():
    m = parse_metrics(_page(10, 4, 3, 2, engines=("0", "1")))
    assert m.generation_tokens_total == 20 and m.requests_running == 6 and m.requests_waiting == 4
    assert m.num_engines == 2 and m.kv_cache_usage == 0.25


def test_window_rates_and_percentiles():
    a = parse_metrics(_page(100, 50, 4, 0, ttft_buckets=(2, 2, 2)), time_s=0.0)
    b = parse_metrics(_page(400, 80, 4, 0, ttft_buckets=(2, 12, 12)), time_s=2.0)
    w = window(a, b)
    assert w.generation_tps == pytest.approx(150.0)
    assert w.prompt_tps == pytest.approx(15.0)
    # All 10 new TTFTs landed in (0.1, 0.5]: the median interpolates to 0.3.
    assert w.ttft.count == 10
    assert w.ttft.p50_s == pytest.approx(0.3)
    assert 0.1 < w.ttft.p99_s <= 0.5
    with pytest.raises(ValueError):
        window(b, a)


def test_counter_reset_does_not_go_negative():
    a = parse_metrics(_page(1000, 50, 0, 0), time_s=0.0)
    b = parse_metrics(_page(30, 5, 0, 0), time_s=1.0)  # the server restarted
    assert window(a, b).generation_tps == pytest.approx(30.0)


def test_histogram_quantile_edges():
    h = Histogram(((0.1, 0.0), (1.0, 4.0), (float("inf"), 4.0)), count=4.0, sum=2.0)
    assert h.quantile(0.5) == pytest.approx(0.55)
    assert Histogram((), 0.0, 0.0).quantile(0.5) is None
    beyond = Histogram(((1.0, 0.0), (float("inf"), 3.0)), 3.0, 9.0)
    assert beyond.quantile(0.5) == 1.0  # above the last finite bound


def test_page_missing_families_names_them():
    text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1\n"
    with pytest.raises(EngineUnreachable, match="vllm:generation_tokens.*not a vLLM server"):
        parse_metrics(text)
    with pytest.raises(EngineUnreachable, match="lacks"):
        parse_metrics("# TYPE python_gc_objects_collected counter\npython_gc_objects_collected_total 3\n")


def test_bad_url_and_unreachable_server():
    with pytest.raises(EngineUnreachable, match="must start with http"):
        MetricsScraper("localhost:8000")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", timeout_s=1.0)
    assert scraper.metrics_url == f"http://127.0.0.1:{port}/metrics"
    with pytest.raises(EngineUnreachable, match="cannot reach .*check the URL"):
        scraper.scrape()
