"""marshmallow schemas for every argument and result of the media RPC methods.

camelCase on the wire, snake_case inside; unknown fields are rejected (marshmallow's default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validates_schema
from marshmallow.validate import Length, OneOf, Range, Regexp

from schemas.fields import DisplayName, Folder, Metadata, Tag, UtcDateTime, strict_bool
from services.media.core.ids import isoformat_z
from services.media.core.vocabulary import MediaStatus, MediaType

MEDIA_TYPES = tuple(MediaType)
STATUSES = tuple(MediaStatus)
SORTS = ("createdAt", "-createdAt", "size", "-size", "originalName", "-originalName")
MAX_TAGS = 50

_VISIBLE = Regexp(r"^[^\x00-\x1f\x7f]+$", error="Must not contain control characters.")


def _identifier(**kwargs: Any) -> fields.String:
    return fields.String(validate=[Length(1, 255), _VISIBLE], **kwargs)


def _entity_type(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=Regexp(
            r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$",
            error="Must be 1-64 characters: a letter, then letters, digits, '_', '.', ':' or '-'.",
        ),
        **kwargs,
    )


def _tags(**kwargs: Any) -> fields.List:
    return fields.List(Tag(), validate=Length(max=MAX_TAGS), **kwargs)


class _EntityPair:
    """``entityType`` and ``entityId`` come together or not at all."""

    @validates_schema
    def _entity_pair(self, data: dict[str, Any], **kwargs: Any) -> None:
        has_type = data.get("entity_type") is not None
        has_id = data.get("entity_id") is not None
        if has_type != has_id:
            missing = "entityId" if has_type else "entityType"
            raise ValidationError(
                "entityType and entityId must be given together.", field_name=missing
            )


class _NewMediaSchema(_EntityPair, Schema):
    """Fields shared by ``upload_file`` and ``create``."""

    user_id = _identifier(data_key="userId", required=True)
    mime_type = fields.String(data_key="mimeType", allow_none=True, validate=Length(max=255))
    entity_type = _entity_type(data_key="entityType", allow_none=True)
    entity_id = _identifier(data_key="entityId", allow_none=True)
    is_public = strict_bool(data_key="isPublic", load_default=False)
    metadata = Metadata(load_default=dict)
    folder = Folder(allow_none=True, load_default=None)
    tags = _tags(load_default=list)
    alt_text = fields.String(data_key="altText", allow_none=True, validate=Length(max=1000))
    caption = fields.String(allow_none=True, validate=Length(max=5000))
    idempotency_key = fields.String(data_key="idempotencyKey", validate=[Length(1, 255), _VISIBLE])


class UploadFileSchema(_NewMediaSchema):
    content = fields.String(required=True)
    original_name = DisplayName(data_key="originalName", required=True)


class InitiateUploadSchema(_NewMediaSchema):
    original_name = DisplayName(data_key="originalName", required=True)
    size = fields.Integer(strict=True, required=True, validate=Range(min=1))
    checksum = fields.String(
        validate=Regexp(r"^sha256:[0-9a-f]{64}$", error="Must be sha256:<64 lowercase hex>.")
    )
    # Send the bytes straight to the bucket through presigned URLs (S3 backend only).
    direct = strict_bool()


class CreateMediaSchema(_NewMediaSchema):
    storage_key = fields.String(data_key="storageKey", validate=Length(1, 512))
    url = fields.Url(schemes={"http", "https"}, validate=Length(max=2048))
    original_name = DisplayName(data_key="originalName")

    @validates_schema
    def _one_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("storage_key" in data) == ("url" in data):
            raise ValidationError("Give exactly one of storageKey or url.", field_name="storageKey")


class UpdateMediaSchema(_EntityPair, Schema):
    original_name = DisplayName(data_key="originalName")
    metadata = Metadata()
    is_public = strict_bool(data_key="isPublic")
    entity_type = _entity_type(data_key="entityType", allow_none=True)
    entity_id = _identifier(data_key="entityId", allow_none=True)
    folder = Folder(allow_none=True)
    tags = _tags()
    alt_text = fields.String(data_key="altText", allow_none=True, validate=Length(max=1000))
    caption = fields.String(allow_none=True, validate=Length(max=5000))
    expected_updated_at = UtcDateTime(data_key="expectedUpdatedAt")

    @validates_schema
    def _entity_both_present(self, data: dict[str, Any], **kwargs: Any) -> None:
        # Changing one half of the link alone would silently re-point it.
        if ("entity_type" in data) != ("entity_id" in data):
            missing = "entityId" if "entity_type" in data else "entityType"
            raise ValidationError(
                "entityType and entityId must be changed together.", field_name=missing
            )


class MediaQuerySchema(Schema):
    type = fields.String(validate=OneOf(MEDIA_TYPES))
    mime_type = fields.String(
        data_key="mimeType",
        validate=Regexp(
            r"^[a-z0-9][a-z0-9.+-]*/(\*|[a-z0-9][a-z0-9.+-]*)$",
            error="Must be a MIME type such as image/png, or a family such as image/*.",
        ),
    )
    user_id = _identifier(data_key="userId")
    entity_type = _entity_type(data_key="entityType")
    entity_id = _identifier(data_key="entityId")
    status = fields.String(validate=OneOf(STATUSES))
    is_public = strict_bool(data_key="isPublic")
    folder = Folder(allow_none=True)
    tags = _tags()
    search = fields.String(validate=Length(1, 200))
    created_after = UtcDateTime(data_key="createdAfter")
    created_before = UtcDateTime(data_key="createdBefore")
    include_deleted = strict_bool(data_key="includeDeleted", load_default=False)
    limit = fields.Integer(strict=True, validate=Range(1, 100), load_default=20)
    cursor = fields.String(validate=Length(1, 1024))
    sort = fields.String(validate=OneOf(SORTS), load_default="-createdAt")
    with_total = strict_bool(data_key="withTotal", load_default=False)

    @pre_load
    def _lower_mime_type(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("mimeType"), str):
            return {**data, "mimeType": data["mimeType"].lower()}
        return data

    @validates_schema
    def _entity_id_needs_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "entity_id" in data and "entity_type" not in data:
            raise ValidationError("entityId needs entityType.", field_name="entityType")


class UrlOptionsSchema(Schema):
    expires_in = fields.Integer(
        data_key="expiresIn", strict=True, validate=Range(1, 7 * 24 * 3600), load_default=3600
    )
    download = strict_bool(load_default=False)
    variant = fields.String(validate=Length(1, 64))


_OUTPUT_FORMATS = ("WEBP", "JPEG", "PNG", "ORIGINAL")


class ResizeSchema(Schema):
    """``resize(id, options)``: a box of up to 16383 px a side; never enlarged."""

    width = fields.Integer(strict=True, validate=Range(1, 16383), load_default=None)
    height = fields.Integer(strict=True, validate=Range(1, 16383), load_default=None)
    fit = fields.String(validate=OneOf(("inside", "cover")), load_default="inside")
    format = fields.String(validate=OneOf(_OUTPUT_FORMATS), load_default="WEBP")
    quality = fields.Integer(strict=True, validate=Range(1, 100), load_default=80)

    @validates_schema
    def _a_size(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("width") is None and data.get("height") is None:
            raise ValidationError("Give width, height or both.", field_name="width")
        if data.get("fit") == "cover" and (data.get("width") is None or data.get("height") is None):
            raise ValidationError("fit 'cover' needs both width and height.", field_name="fit")


class CropSchema(Schema):
    """``crop(id, options)``: a box in displayed (upright) pixels of the original."""

    x = fields.Integer(strict=True, required=True, validate=Range(min=0))
    y = fields.Integer(strict=True, required=True, validate=Range(min=0))
    width = fields.Integer(strict=True, required=True, validate=Range(1, 16383))
    height = fields.Integer(strict=True, required=True, validate=Range(1, 16383))
    format = fields.String(validate=OneOf(_OUTPUT_FORMATS), load_default="WEBP")
    quality = fields.Integer(strict=True, validate=Range(1, 100), load_default=80)


class RegenerateSchema(Schema):
    limit = fields.Integer(strict=True, validate=Range(1, 1000), load_default=20)


class MediaSchema(Schema):
    """The Media record as callers and event subscribers see it."""

    id = fields.String()
    type = fields.String()
    status = fields.String()
    original_name = fields.String(data_key="originalName")
    mime_type = fields.String(data_key="mimeType")
    size = fields.Integer()
    checksum = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    user_id = fields.String(data_key="userId", allow_none=True)
    entity_type = fields.String(data_key="entityType", allow_none=True)
    entity_id = fields.String(data_key="entityId", allow_none=True)
    is_public = fields.Boolean(data_key="isPublic")
    metadata = fields.Dict(attribute="meta")
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    folder = fields.String(allow_none=True)
    tags = fields.List(fields.String())
    alt_text = fields.String(data_key="altText", allow_none=True)
    caption = fields.String(allow_none=True)
    created_at = UtcDateTime(data_key="createdAt")
    updated_at = UtcDateTime(data_key="updatedAt")
    deleted_at = UtcDateTime(data_key="deletedAt", allow_none=True)
    # What processing extracted (dimensions, duration, codecs, placeholders, ...), and why it
    # failed; variants are added by the catalog, with their URLs.
    facts = fields.Dict(allow_none=True)
    processing_error = fields.String(data_key="processingError", allow_none=True)


def _compile_dump(schema: Schema) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(wire key, attribute, formatter) for each field of ``schema``.

    Every list and every page of results dumps records, and marshmallow's per-field machinery
    cost more than the rest of a findAll handler. The schema stays the one description of the
    record; this only precomputes how to apply it (tests check both give the same output).
    """
    plan = []
    for name, field in schema.dump_fields.items():
        if isinstance(field, UtcDateTime):
            formatter: Callable[[Any], Any] = isoformat_z
        elif isinstance(field, fields.Dict):
            formatter = _copy_dict
        elif isinstance(field, fields.List):
            formatter = _copy_list
        else:
            formatter = _same
        plan.append((field.data_key or name, field.attribute or name, formatter))
    return plan


def _same(value: Any) -> Any:
    return value


def _copy_dict(value: Any) -> Any:
    return None if value is None else dict(value)


def _copy_list(value: Any) -> Any:
    return None if value is None else list(value)


_MEDIA_DUMP = _compile_dump(MediaSchema(exclude=("url",)))


def dump_media(media: Any, url: str | None) -> dict[str, Any]:
    """Dump a Media row; ``url`` depends on settings the row does not know, so it is passed in."""
    result = {
        key: formatter(getattr(media, attribute)) for key, attribute, formatter in _MEDIA_DUMP
    }
    result["url"] = url
    return result


# Built once: building a schema costs more than loading a typical payload with it.
UPLOAD_FILE, CREATE, UPDATE = UploadFileSchema(), CreateMediaSchema(), UpdateMediaSchema()
URL_OPTIONS, INITIATE_UPLOAD = UrlOptionsSchema(), InitiateUploadSchema()
RESIZE, CROP, REGENERATE = ResizeSchema(), CropSchema(), RegenerateSchema()
QUERY = MediaQuerySchema()
