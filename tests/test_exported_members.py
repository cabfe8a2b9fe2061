"""The public surface is exactly what is meant to be public (after httpx's test of the
same name): adding or removing a public name is a decision, made here on purpose."""

from __future__ import annotations

import inspect

import pds
from pds import errors

EXPECTED_PDS = {
    "AccessEntry",
    "Caveats",
    "GrantInfo",
    "GrantedRead",
    "Grantee",
    "Invocation",
    "KdfParams",
    "KeyProvider",
    "PrincipalKey",
    "Record",
    "RecordInfo",
    "RecordPage",
    "RepairReport",
    "Response",
    "Store",
    "SymmetricKey",
    "Token",
    "Vault",
    "VaultInfo",
    "__version__",
    "errors",
    "open_store",
}


def test_pds_all_is_the_intended_public_api() -> None:
    assert set(pds.__all__) == EXPECTED_PDS
    assert len(pds.__all__) == len(set(pds.__all__)), "duplicate names in pds.__all__"


def test_every_public_name_resolves() -> None:
    for name in pds.__all__:
        assert getattr(pds, name, None) is not None, name


def test_public_classes_come_from_pds() -> None:
    for name in pds.__all__:
        value = getattr(pds, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.split(".")[0] == "pds", name
            assert not value.__module__.split(".")[-1].startswith("_"), (
                f"{name} is defined in a private module {value.__module__}"
            )


def _error_classes() -> set[str]:
    return {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, errors.PDSError)
        and value.__module__ == errors.__name__
    }


def test_errors_all_lists_every_pds_error() -> None:
    assert set(errors.__all__) == _error_classes()
    assert len(errors.__all__) == len(set(errors.__all__)), "duplicate names in errors.__all__"


def test_every_error_name_resolves_to_a_pds_error() -> None:
    for name in errors.__all__:
        value = getattr(errors, name)
        assert inspect.isclass(value) and issubclass(value, errors.PDSError), name


def test_every_error_is_drawn_in_the_module_docstring() -> None:
    """The tree in ``pds/errors.py``'s docstring is the documentation of the hierarchy."""
    doc = errors.__doc__ or ""
    assert [name for name in sorted(_error_classes()) if name not in doc] == []


def test_errors_subclass_builtins_where_natural() -> None:
    assert issubclass(errors.FormatError, ValueError)
    assert issubclass(errors.NotFound, LookupError)
    assert issubclass(errors.VaultNotFound, errors.NotFound)
    assert issubclass(errors.RecordDeleted, errors.RecordNotFound)
    assert issubclass(errors.WrongPassphrase, errors.UnlockFailed)
    assert issubclass(errors.WrongKey, errors.UnlockFailed)
    assert issubclass(errors.StoreCorrupt, errors.StoreError)
    assert issubclass(errors.SchemaTooNew, errors.StoreError)
    assert issubclass(errors.NotAStore, errors.FormatError)
    assert issubclass(errors.InvalidRecordData, errors.FormatError)
    assert issubclass(errors.WeakKdfParameters, errors.FormatError)


def test_integrity_error_carries_a_reason() -> None:
    exc = errors.IntegrityError("record-hash")
    assert exc.reason == "record-hash"
    assert "record-hash" in str(exc)
