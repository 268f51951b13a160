"""payhook's domain: payments, orders, provider events and outcomes. Pure Python, no I/O."""
