"""Every query about certificates, their keys and their addresses. Nothing here commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, or_, select, union_all
from sqlalchemy.orm import Session, selectinload

from service.db.models import AddressRow, AddressState, CertKeyRow, CertRow


def get(session: Session, fingerprint: str, *, for_update: bool = False) -> CertRow | None:
    query = select(CertRow).where(CertRow.fingerprint == fingerprint)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def get_many(session: Session, fingerprints: Sequence[str]) -> dict[str, CertRow]:
    """The stored certificates among ``fingerprints``, locked for update, with their keys and
    addresses loaded (three queries, however many there are)."""
    if not fingerprints:
        return {}
    query = (
        select(CertRow)
        .where(CertRow.fingerprint.in_(sorted(set(fingerprints))))
        .order_by(CertRow.fingerprint)
        .with_for_update()
        .options(selectinload(CertRow.keys), selectinload(CertRow.addresses))
    )
    return {row.fingerprint: row for row in session.scalars(query)}


def find_by_key(
    session: Session,
    *,
    fingerprint: str | None = None,
    key_id: str | None = None,
    only_findable: bool = True,
) -> Sequence[CertRow]:
    """Certificates holding a (sub)key with this fingerprint or key id.

    Certificates whose primary key matches come first, then those whose subkey proved it
    belongs there (``findable``), then the others, each by age: the first uploader of a
    subkey is more likely its owner than someone who bound it later. By fingerprint, a
    subkey that is not ``findable`` (it might be someone's primary key) never matches,
    unless ``only_findable`` is off (operators look for every holder of a key); a key id is
    ambiguous by nature and only ranks them.
    """
    if (fingerprint is None) == (key_id is None):
        raise ValueError("give exactly one of fingerprint and key_id")
    match = CertKeyRow.fingerprint == fingerprint if fingerprint else CertKeyRow.key_id == key_id
    query = (
        select(CertRow)
        .join(CertKeyRow, CertKeyRow.cert_fingerprint == CertRow.fingerprint)
        .where(match)
        .order_by(
            CertKeyRow.is_primary.desc(),
            CertKeyRow.findable.desc(),
            CertRow.first_seen,
            CertRow.fingerprint,
        )
    )
    if fingerprint and only_findable:
        query = query.where(or_(CertKeyRow.is_primary, CertKeyRow.findable))
    return session.scalars(query).unique().all()


def primary_fingerprints(
    session: Session, fingerprints: Iterable[str], key_ids: Iterable[str]
) -> list[str]:
    """Stored certificates whose primary key has one of these fingerprints or key ids."""
    fprs, ids = sorted(set(fingerprints)), sorted(set(key_ids))
    if not fprs and not ids:
        return []
    query = (
        select(CertRow.fingerprint)
        .where(or_(CertRow.fingerprint.in_(fprs), CertRow.key_id.in_(ids)))
        .order_by(CertRow.fingerprint)
    )
    return list(session.scalars(query))


def find_published_by_address(session: Session, address: str) -> CertRow | None:
    """The certificate an address is published for (the latest verification wins)."""
    query = (
        select(CertRow)
        .join(AddressRow, AddressRow.cert_fingerprint == CertRow.fingerprint)
        .where(AddressRow.address == address, AddressRow.state == AddressState.PUBLISHED.value)
        .order_by(AddressRow.verified_at.desc(), AddressRow.id.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()


def find_all_published_by_address(session: Session, address: str) -> Sequence[CertRow]:
    """Every certificate on which the address is published or revoked, latest first."""
    query = (
        select(CertRow)
        .join(AddressRow, AddressRow.cert_fingerprint == CertRow.fingerprint)
        .where(
            AddressRow.address == address,
            AddressRow.state.in_([AddressState.PUBLISHED.value, AddressState.REVOKED.value]),
        )
        .order_by(AddressRow.verified_at.desc(), AddressRow.id.desc())
    )
    return session.scalars(query).unique().all()


def set_keys(cert: CertRow, keys: Sequence[tuple[str, str, bool, bool]]) -> None:
    """Make the (fingerprint, key id, is_primary, findable) rows of ``cert`` exactly ``keys``."""
    wanted = {fpr: (kid, primary, findable) for fpr, kid, primary, findable in keys}
    for row in list(cert.keys):
        if row.fingerprint not in wanted:
            cert.keys.remove(row)
        else:
            _kid, _primary, findable = wanted.pop(row.fingerprint)
            if row.findable != findable:
                row.findable = findable
    for fpr, (kid, primary, findable) in wanted.items():
        cert.keys.append(
            CertKeyRow(fingerprint=fpr, key_id=kid, is_primary=primary, findable=findable)
        )


def published_addresses(cert: CertRow) -> list[str]:
    return sorted(
        a.address
        for a in cert.addresses
        if a.state in (AddressState.PUBLISHED.value, AddressState.REVOKED.value)
    )


_SERVED = (AddressState.PUBLISHED.value, AddressState.REVOKED.value)


def find_wkd(session: Session, domain: str, wkd_hash: str) -> bytes | None:
    """The WKD body for a local-part hash in a domain (the latest confirmation wins).

    One indexed probe per hash column: an OR of the two made SQLite walk every address of
    the domain.
    """
    served = (AddressRow.state.in_(_SERVED), AddressRow.wkd_data.is_not(None))
    columns = (AddressRow.wkd_data, AddressRow.verified_at, AddressRow.id)
    both = union_all(
        select(*columns).where(
            AddressRow.domain == domain, AddressRow.wkd_hash == wkd_hash, *served
        ),
        select(*columns).where(
            AddressRow.domain == domain, AddressRow.wkd_hash_alt == wkd_hash, *served
        ),
    ).subquery()
    query = select(both.c.wkd_data).order_by(both.c.verified_at.desc(), both.c.id.desc()).limit(1)
    return session.scalars(query).first()


def wkd_rows(session: Session, domains: Sequence[str] | None = None) -> Sequence[AddressRow]:
    """Every served address with its WKD body, oldest confirmation first."""
    query = select(AddressRow).where(
        AddressRow.state.in_(_SERVED), AddressRow.wkd_data.is_not(None)
    )
    if domains:
        query = query.where(AddressRow.domain.in_(domains))
    return session.scalars(query.order_by(AddressRow.verified_at, AddressRow.id)).all()


def count_published_in_domain(session: Session, domain: str) -> int:
    query = (
        select(AddressRow.address)
        .where(AddressRow.domain == domain, AddressRow.state == AddressState.PUBLISHED.value)
        .distinct()
    )
    return len(session.scalars(query).all())


def delete(session: Session, cert: CertRow) -> None:
    """Delete a certificate with its key and address rows (its tokens go by cascade)."""
    session.delete(cert)
    session.flush()


def batch_after(session: Session, after: str, size: int) -> Sequence[CertRow]:
    """Up to ``size`` stored certificates after the fingerprint ``after``, in order, locked
    for update, with their keys and addresses loaded."""
    query = (
        select(CertRow)
        .where(CertRow.fingerprint > after)
        .order_by(CertRow.fingerprint)
        .limit(size)
        .with_for_update()
        .options(selectinload(CertRow.keys), selectinload(CertRow.addresses))
    )
    return session.scalars(query).all()


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CertRow)) or 0


def count_published_addresses(session: Session) -> int:
    """Distinct confirmed, published addresses (an address moved to a newer key counts once)."""
    query = select(func.count(func.distinct(AddressRow.address))).where(
        AddressRow.state == AddressState.PUBLISHED.value
    )
    return session.scalar(query) or 0
