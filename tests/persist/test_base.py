"""``Database.from_url``: what a user's --db or URL names."""

from __future__ import annotations

import pytest

from trellis.errors import InvalidConfigError
from trellis.persist.base import Database


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("runs.db", "runs.db"),
        ("sqlite:///runs.db", "runs.db"),
        ("sqlite://runs.db", "runs.db"),
        ("sqlite:////var/lib/runs.db", "/var/lib/runs.db"),
        ("SQLite:///runs.db", "runs.db"),  # a scheme is read in any case (RFC 3986)
    ],
)
def test_a_sqlite_path_or_url_names_the_file(url: str, target: str) -> None:
    assert Database.from_url(url) == Database("sqlite", target)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL", "POSTGRES"])
def test_a_postgres_url_in_any_case_is_handed_on_in_lower_case(scheme: str) -> None:
    where = Database.from_url(f"{scheme}://app@db/prod?sslmode=require&schema=billing")
    assert (where.kind, where.schema) == ("postgres", "billing")
    assert where.target == f"{scheme.lower()}://app@db/prod?sslmode=require"


def test_another_scheme_is_refused_by_name_without_the_url() -> None:
    with pytest.raises(InvalidConfigError, match="scheme 'mysql' is not supported") as caught:
        Database.from_url("mysql://app:s3cret@db/x")
    assert "s3cret" not in str(caught.value)
