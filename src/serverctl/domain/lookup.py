"""Finding a pool and its members by id, with the 404 an operator sees when one is missing."""

from __future__ import annotations

from sqlalchemy.orm import Session

from serverctl.db.models import Member, Pool
from serverctl.errors import NotFound


def pool(s: Session, pool_id: int) -> Pool:
    found = s.get(Pool, pool_id)
    if found is None:
        raise NotFound(f"no pool with id {pool_id}")
    return found


def member(s: Session, in_pool: Pool, member_id: int) -> Member:
    found = s.get(Member, member_id)
    if found is None or found.pool_id != in_pool.id:
        raise NotFound(f"pool {in_pool.name!r} has no member with id {member_id}")
    return found


def pool_member(s: Session, pool_id: int, member_id: int) -> tuple[Pool, Member]:
    found = pool(s, pool_id)
    return found, member(s, found, member_id)
