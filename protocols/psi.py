"""Private Set Intersection for PyVertical, with OpenMined's ``openmined.psi`` package.

Star topology: the label holder is the PSI *client*; each data owner is a PSI *server*.
RAW data structure (no false positives), intersection revealed to the label holder.
Every message crosses the wire as serialized protobuf bytes (a uint8 tensor), never
pickled. Ids are de-duplicated first, because RAW treats duplicates as a multiset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from splitfed.errors import DataError

MIN_COMMON = 10  # fewer common samples than this cannot train anything


def _psi():
    import private_set_intersection.python as psi  # the package installs as openmined.psi

    return psi


def unique_ids(ids: Iterable[object]) -> list[str]:
    """Sorted, de-duplicated ids; refuses anything that is not a string."""
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise DataError(f"PSI ids must be strings; got {type(bad[0]).__name__} {bad[0]!r}. Convert them with str()")
    return sorted(set(ids))


def to_tensor(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8)


def to_bytes(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()


class LabelHolder:
    """The PSI client: asks each owner, learns which of its own ids each owner also has."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = unique_ids(ids)
        psi = _psi()
        self._client = psi.client.CreateWithNewKey(True)  # True: reveal the intersection itself
        self.request = self._client.CreateRequest(self.ids).SerializeToString()

    def common_with(self, setup: bytes, response: bytes) -> set[str]:
        psi = _psi()
        s, r = psi.ServerSetup(), psi.Response()
        s.ParseFromString(setup)
        r.ParseFromString(response)
        return {self.ids[i] for i in self._client.GetIntersection(s, r)}


def owner_answer(ids: Sequence[str], request: bytes, n_client_ids: int) -> tuple[bytes, bytes]:
    """The PSI server's part: (setup, response) for the label holder's request."""
    psi = _psi()
    own = unique_ids(ids)
    server = psi.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(0.0, max(1, n_client_ids), own, psi.DataStructure.RAW)
    req = psi.Request()
    req.ParseFromString(request)
    return setup.SerializeToString(), server.ProcessRequest(req).SerializeToString()


def check_intersection(common: set[str], minimum: int, owners: int) -> list[str]:
    """Canonical order of the common ids, or a clear error when there are too few."""
    if not common:
        raise DataError(
            f"the {owners} data owner(s) and the label holder share no sample id: check that every party keys "
            "its samples the same way (KDEF: the file stem, e.g. AF01ANS)"
        )
    if len(common) < minimum:
        raise DataError(f"only {len(common)} sample id(s) are common to every party; at least {minimum} are needed")
    return sorted(common)


def encode_ids(ids: list[str]) -> torch.Tensor:
    if any("\n" in i for i in ids):
        raise DataError("sample ids must not contain line breaks")
    return to_tensor("\n".join(ids).encode("utf-8"))


def decode_ids(t: torch.Tensor) -> list[str]:
    text = to_bytes(t).decode("utf-8")
    return text.split("\n") if text else []
