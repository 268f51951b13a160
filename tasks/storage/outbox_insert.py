"""The outbox's one INSERT on PostgreSQL, shared by the outbox and the statement that finishes a
delivery (repositories.py), which carries it on the hot path.

Ids are the writing transaction's id times PER_TRANSACTION plus the item's index in it: see
outbox.py for why.
"""

from __future__ import annotations

from sqlalchemy import bindparam, text

from tasks.storage.tables import UtcDateTime

# Notifications one transaction may write (a decision makes a handful).
PER_TRANSACTION = 64

# One statement for every row of a transaction, the same text each time (so prepared and cached):
# ids from the transaction id, sequences after the order's largest so far. The order is locked
# by the writing transaction, so that largest cannot move under it.
POSTGRES_INSERT = text(
    "INSERT INTO notifications"
    " (id, type, order_id, order_sequence, payment_id, delivery_id, data, created_at)"
    " SELECT pg_current_xact_id()::text::bigint * 64 + :told_slot + item.n - 1,"  # 64: see below
    "  item.type, :told_order,"
    "  (SELECT coalesce(max(order_sequence), 0) FROM notifications WHERE order_id = :told_order)"
    "  + item.n, :told_payment, :told_delivery, item.data, :told_at"
    # The items as two JSON arrays of strings: passed as plain text, where text[] parameters
    # are escaped character by character on the way out.
    " FROM ROWS FROM (json_array_elements_text(CAST(:told_types AS json)),"
    "  json_array_elements_text(CAST(:told_datas AS json))) WITH ORDINALITY AS item(type, data, n)"
).bindparams(bindparam("told_at", type_=UtcDateTime()))
assert PER_TRANSACTION == 64, "the INSERT above multiplies by PER_TRANSACTION literally"
