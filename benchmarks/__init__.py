"""Side-by-side measurements of the series: tracer overhead, slider redraw time, the whole series'
time and memory, and each start method's cost. Run ``python -m benchmarks`` from the repository
root (``--quick`` for a smoke run with tiny sizes)."""
