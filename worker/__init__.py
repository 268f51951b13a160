"""How each payhook process starts: settings, the Celery app, the receiver and API, the CLI."""
