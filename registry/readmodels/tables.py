"""Read-model tables. Alembic owns their DDL (``migrations/``); this is the model it checks.

Constraints other than primary keys are indexes (unique where needed) so that a
rebuilt table swapped in under the live name can get them back by name.

Every table here is derived from the event log and can be rebuilt from position zero.
Quantities are tonnes (BIGINT); serial blocks are stored as ``first``/``last`` ranges.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

tracking = Table(
    "rm_tracking",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    comment="Last event-log position applied by each projection (same transaction as its rows).",
)

accounts = Table(
    "rm_accounts",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("account_uuid", String(36), nullable=False),
    Column("account_type", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("holder_name", String(200), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("sector", String(16), nullable=False),
    Column("province", String(64), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
    comment="Account directory: type, holder, sector, province, state.",
)
Index("ux_rm_accounts_uuid", accounts.c.account_uuid, unique=True)
Index("ix_rm_accounts_type_sector", accounts.c.account_type, accounts.c.sector)

holdings = Table(
    "rm_holdings",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("unit_class", String(96), primary_key=True),
    Column("unit_type", String(8), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("project", String(64), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False),
    comment="Holdings per account and unit class: total = held + available.",
)

transactions = Table(
    "rm_transactions",
    metadata,
    Column("party", String(64), primary_key=True),
    Column("client_id", String(128), primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("status", String(16), nullable=False),
    Column("source", String(64)),
    Column("destination", String(64)),
    Column("quantity", BigInteger, nullable=False),
    Column("blocks", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("principal", String(200), nullable=False),
    Column("refusal_reason", String(64), nullable=False),
    Column("refusal_message", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("reversed_by", String(200)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
    comment="Every transaction by (party, client id), completed or refused with its reason.",
)
Index("ix_rm_transactions_position", transactions.c.position)

history = Table(
    "rm_account_history",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("unit_class", String(96), primary_key=True),
    Column("direction", String(8), primary_key=True),
    Column("party", String(64), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("counterparty", String(64)),
    Column("unit_type", String(8), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("blocks", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("principal", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    comment="Every movement per account (DEBIT or CREDIT), keyset-paginated by position.",
)
Index("ix_rm_account_history_kind", history.c.account_id, history.c.kind, history.c.position)
Index("ix_rm_account_history_time", history.c.account_id, history.c.recorded_at)

supply = Table(
    "rm_supply",
    metadata,
    Column("unit_class", String(96), primary_key=True),
    Column("account_type", String(32), primary_key=True),
    Column("total", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    comment="Units per unit class by holding account type; SURRENDER and CANCELLATION "
    "are the surrendered and cancelled units, 'held' what exchange holds reserve.",
)

issued = Table(
    "rm_issued",
    metadata,
    Column("unit_class", String(96), primary_key=True),
    Column("issued", BigInteger, nullable=False),
    Column("next_serial", BigInteger, nullable=False),
    comment="Units issued per unit class (the left side of the conservation check).",
)

serial_blocks = Table(
    "rm_serial_blocks",
    metadata,
    Column("unit_class", String(96), primary_key=True),
    Column("first", BigInteger, primary_key=True),
    Column("last", BigInteger, nullable=False),
    Column("account_id", String(64), nullable=False),
    comment="Where each serial block is now.",
)
Index("ix_rm_serial_blocks_account", serial_blocks.c.account_id)

serial_movements = Table(
    "rm_serial_movements",
    metadata,
    Column("unit_class", String(96), primary_key=True),
    Column("first", BigInteger, primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("last", BigInteger, nullable=False),
    Column("source", String(64)),
    Column("destination", String(64), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("party", String(64), nullable=False),
    Column("client_id", String(128), nullable=False),
    comment="Every block each transaction moved: the chain of accounts a serial passed.",
)
Index("ix_rm_serial_movements_range", serial_movements.c.unit_class, serial_movements.c.last)
