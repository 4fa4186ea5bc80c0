"""Fanning a run out reads each page of the audience by its subscriber range: the
work per page stays the same however large the list (it once read every confirmed
subscription of the lists for each page, so 1,000,000 readers took 500 scans of
1,000,000 index entries)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from newsletter.db import make_engine, make_sessionmaker
from newsletter.runs.ledger import ledger_page
from tests.factories import add_member, make_list


def subscriptions_read(engine: Engine, query: Any) -> int:
    """Rows of `subscriptions` the database reads to answer `query` (EXPLAIN ANALYZE
    of a SELECT: nothing is written). Sequential scans are ruled out, as on a list
    of any size the planner would rule them out itself."""
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        [plan] = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.string, compiled.params
        ).scalar_one()

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    return sum(
        n["Actual Rows"] * n["Actual Loops"]
        for n in nodes(plan["Plan"])
        if n.get("Relation Name") == "subscriptions"
    )


def test_a_ledger_page_reads_only_its_own_readers_subscriptions(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with make_sessionmaker(engine)() as session:
        news = make_list(session)
        other = make_list(session, "other", "Other")
        ids = [add_member(session, news, f"reader{n}@example.org").id for n in range(200)]
        for n in range(50):
            add_member(session, other, f"elsewhere{n}@example.org")
        session.commit()
        first, last = ids[150], ids[159]  # a page near the end of the list
        read = subscriptions_read(engine, ledger_page(1, [news.id], first, last))
    engine.dispose()
    assert read == 10  # the page's ten readers, not the list's 200
