"""/v1/artifacts/download: streams one object of the local store for a signed, expiring token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from sqlalchemy import select

from app.api.deps import SessionDep, StoreDep
from app.models import ApiKey
from app.schemas import ErrorOut
from app.storage.base import ObjectNotFound
from app.storage.local import LocalStore, TokenError, token_issuer

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


@router.get(
    "/download", response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"},
               403: {"model": ErrorOut, "description": "Token invalid or expired"},
               404: {"model": ErrorOut, "description": "No such artifact, or the store is S3"},
               503: {"model": ErrorOut, "description": "Artifact store unavailable"}},
    summary="Download one artifact file through a link from /v1/jobs/{id}/artifacts",
    description="No API key: the token is the credential. It names exactly one object and expires.",
)
async def download(store: StoreDep, session: SessionDep,
                   token: Annotated[str, Query(min_length=1, max_length=4096)]) -> StreamingResponse:
    if not isinstance(store, LocalStore):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this server stores artifacts in S3; use the presigned "
                            "links from /v1/jobs/{id}/artifacts")
    try:
        key, filename = store.resolve_token(token)
        issuer = token_issuer(token)
        if issuer is not None and await session.scalar(
                select(ApiKey.revoked_at.is_(None)).where(ApiKey.id == issuer)) is not True:
            raise TokenError("the API key this link was issued to has been revoked; request a new link with "
                             "a valid key")
        size = store.size(key)
        chunks = store.stream(key)
    except TokenError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except (ObjectNotFound, FileNotFoundError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the artifact no longer exists") from None
    safe = "".join(c for c in filename if c.isalnum() or c in "._-") or "artifact"
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{safe}"',
        "Cache-Control": "private, no-store",
    })
