"""Quick start: a vault, records, a grant, a read by the grantee, a revocation.

Run: ``python examples/quickstart.py`` (it works in a temporary directory).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pds


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as workdir,
        pds.open_store(Path(workdir) / "pds.db") as store,
    ):
        owner_key = Path(workdir) / "owner.key"
        pds.SymmetricKey.create_file(owner_key)
        vault = store.open_vault(store.create_vault(key_file=owner_key))
        vault.unlock(key_file=owner_key)

        payslip = vault.put("income/payslips", {"employer": "ACME", "net": 2450.0})
        vault.put("health/visits", {"clinic": "north", "date": "2026-05-03"})
        print("stored", payslip.record_id, "in", vault.collections())

        agency_key = pds.PrincipalKey.generate()
        token = vault.grant(
            agency_key.did,
            collections=["income/*"],
            purpose="child allowance check",
            expires=dt.timedelta(days=30),
        )
        agency = pds.Grantee(agency_key)
        read = agency.read(store, token)
        print("the agency read", [record.data for record in read.records])

        vault.revoke(token, reason="consent withdrawn")
        try:
            agency.read(store, token)
        except pds.errors.Revoked:
            print("after revocation the agency is refused")
        # The person's view: who read what, when and why, newest first.
        # (An entry the host garbled has no time: it is listed as damaged, time None.)
        for entry in vault.log().entries:
            when = entry.time.isoformat() if entry.time is not None else "time unknown"
            print(when, entry.kind, entry.actor[:24], entry.purpose, entry.result)


if __name__ == "__main__":
    main()
