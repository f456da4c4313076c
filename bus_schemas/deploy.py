"""Model requests the gateway hands to the classifiers: core NATS request/reply on
``subjects.MODEL_IN`` (queue group ``MODEL_QUEUE``: one classifier answers), not stored.

The classifier process holds the model registry and the means to check a folder (one
LiteRT inference), which the gateway may not import; it answers ``list`` (the registry's
versions with their held-out metrics and which is deployed), and ``deploy`` /
``rollback`` by validating the folder and publishing the ``ModelDeployed`` that every
classifier follows, exactly as ``tidzam_ctl model deploy`` does
(``inference.deploying``). Packed with ``bus_schemas.requests``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus_schemas.requests import unpack_request

MODEL_QUEUE = "tidzam-model-requests"


class ModelRequest(BaseModel):
    """``list`` the versions (of ``spec``'s model, every model when empty), ``deploy``
    ``NAME`` or ``NAME@VERSION``, ``rollback`` ``NAME``. ``by`` says who asked (logged)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["list", "deploy", "rollback"]
    spec: Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9_.@+-]*$")] = ""
    new_windowing: bool = False
    by: Annotated[str, Field(max_length=200)] = ""


def unpack(data: bytes) -> ModelRequest:
    return unpack_request(ModelRequest, data, "model")
