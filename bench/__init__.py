"""modelget's benchmarks (issue #6): modelget against its peers and the link limit.

Run from the repository root, as root (the capped scenes shape a veth into a network
namespace; without root they are skipped)::

    .venv/bin/python -m bench                # the full run: writes docs/benchmarks.md
    .venv/bin/python -m bench --quick        # small sizes, one run each: a smoke test
    .venv/bin/python -m bench --scenes S1,S2 # only these scenes

Everything runs on this machine: real nginx as the CDN, the hub simulator for the hub APIs,
the real peers (huggingface_hub, aria2c as hfd.sh runs it, curl). Never part of the test
suite: ``tests/test_bench_helpers.py`` only checks the pure helpers.
"""
