"""Benchmarks and development harnesses: never imported by the product packages.

    python -m bench.engine   the engine's figures (`make bench-engine`)
    python -m bench.web      the web debugger's figures (`make bench-web`)
    python -m bench.build    compiles the plain C loop (bench/_baseline.c) in place

bench/dev/ holds a browser harness that plays recorded protocol messages.
"""
