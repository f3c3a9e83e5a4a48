"""`python -m pulse.bench.worker`: one measurement in a fresh process, JSON in (stdin), JSON out (stdout).

The request's `task` is `measure` (a system at one length, see `pulse.bench.measure`)
or `machine` (describe the machine and time a dense matmul). The last line of stdout
is the result; anything a library prints before it is ignored by the runner.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    request = json.loads(sys.stdin.read())
    chosen = request.get("threads")
    if chosen:
        # before torch is imported, so every thread pool it creates has this size
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(chosen)
    from pulse import threads
    from pulse.bench import machine, measure

    if not chosen:  # --threads not given: the free CPUs decide, sampled now (or PULSE_THREADS / OMP_NUM_THREADS)
        threads.adapt(wait=threads.SAMPLE)
        threads.freeze()  # one thread count for the whole measurement, recorded with it
    measure.configure(request)
    if request["task"] == "machine":
        result = {"pid": os.getpid(), "status": "ok", **machine.describe(request["device"])}
        result["matmul"] = machine.matmul_gflops(
            size=request["matmul_size"], device=request["device"], dtype=request["dtype"], repeats=request["repeats"]
        )
    else:
        result = measure.measure(request)
    result["threads_how"] = "--threads" if chosen else threads.chosen()
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
