"""Tables, repositories and the unit of work, on PostgreSQL (psycopg 3) or SQLite."""
