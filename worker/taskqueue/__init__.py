"""The Celery side: the app, task metrics and their server, Flower."""
