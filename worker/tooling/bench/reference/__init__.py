"""The plain design payhook is measured against: the same flow, written straightforwardly.

Nothing here imports payhook (`domain`, `tasks`, `worker` outside this package) or reads its
settings: a Stripe receiver as a raw ASGI app with a small psycopg connection pool (verify, one
INSERT, one Celery publish), and a plain Celery task that confirms the payment in one psycopg
transaction, with its own tables, queue, Celery app and settings.
"""
