"""``ishowtts-bench``: the stock f5-tts path and the daemon's fast path, measured in one run.

Modules: ``workload`` (the issue's fixed inputs), ``models`` (random full-size or tiny models),
``stock`` (f5-tts's own inference path), ``measure`` (the measurements, in order) with
``harness`` (plan, state, timer, section guard), ``variants`` (variant names to fast samplers),
``fastpath`` (latency, TTFA, stream, concurrency, NFE sweep) and ``fidelity`` (mel errors),
``flops`` (FLOP floor and Orin projection), ``record`` (JSON record, history, regression
flag), ``plot`` (PNG), ``cli`` (the entry point).
"""
