"""benchmarks/serve_harness.py: the medians of repeated load runs."""

from collections.abc import Callable
from types import ModuleType


def run(server: str, sent_per_s: float, errors: int = 0, identical: bool = True) -> dict:
    timings = {"wall_s": 1000 / sent_per_s, "p50_ms": 2 * sent_per_s, "p95_ms": 3.0}
    timings |= {"p99_ms": 4.0, "mean_batch": sent_per_s / 10}
    counts = {"requests": 1000, "not_sent": 0, "errors": errors, "outputs_differing": 0}
    errs = {"error_examples": [f"503: full {sent_per_s}"] if errors else []}
    cell = {"server": server, "mode": "beam", "clients": 32}
    return cell | timings | counts | errs | {"sent_per_s": sent_per_s, "identical": identical}


def test_medians_of_repeats_per_cell(load_benchmark: Callable[[str], ModuleType]) -> None:
    harness = load_benchmark("serve_harness")
    runs = [run("batched", 100.0), run("unbatched", 20.0), run("batched", 120.0, errors=2)]
    runs += [run("unbatched", 22.0), run("batched", 90.0, identical=False), run("unbatched", 21.0)]
    batched, unbatched = harness.medians(runs)
    assert (batched["server"], unbatched["server"]) == ("batched", "unbatched")
    assert batched["sent_per_s"] == 100.0 and batched["sent_per_s_runs"] == [100.0, 120.0, 90.0]
    assert batched["p50_ms"] == 200.0 and batched["mean_batch"] == 10.0
    assert batched["errors"] == 2 and batched["requests"] == 3000
    assert batched["error_examples"] == ["503: full 120.0"]
    assert batched["identical"] is False and unbatched["identical"] is True
    assert unbatched["sent_per_s"] == 21.0
