"""`payhook soak`: a bounded run with faults on a schedule and an invariant check."""
