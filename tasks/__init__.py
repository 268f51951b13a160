"""payhook's use cases, the Celery task shims that run them, and the storage they need."""
