"""find* filters, sorting and keyset pagination."""

from __future__ import annotations

import base64
import json

import eventlet
import pytest

from schemas import load
from schemas.media import MediaSchema, UploadFileSchema, dump_media
from services.media.core.identity import Caller
from services.media.core.models import Media
from services.media.exceptions import Forbidden, ValidationError
from tests.files import one_page_pdf_bytes, pdf_bytes, png_bytes, upload_data
from tests.unit.conftest import act_as


def _upload(service, color="red", **extra):
    return service.upload_file(upload_data(png_bytes(color=color), **extra))


def _ids(page):
    return [m["id"] for m in page["items"]]


def test_default_order_is_newest_first(service):
    ids = [_upload(service, c)["id"] for c in ("red", "green", "blue")]
    assert _ids(service.findAll()) == ids[::-1]
    assert _ids(service.findAll({"sort": "createdAt"})) == ids


def test_filters(service):
    img = _upload(service, entityType="course", entityId="1", tags=["a", "b"], folder="x/y")
    doc = service.upload_file(
        upload_data(
            one_page_pdf_bytes(), name="Syllabus.pdf", caption="Week ONE École", isPublic=True
        )
    )
    service.process_media()  # both READY
    cases = {
        "type": ({"type": "DOCUMENT"}, [doc]),
        "mime family": ({"mimeType": "image/*"}, [img]),
        "mime family any case": ({"mimeType": "Image/*"}, [img]),
        "mime exact": ({"mimeType": "application/pdf"}, [doc]),
        "entity": ({"entityType": "course", "entityId": "1"}, [img]),
        "entity type": ({"entityType": "course"}, [img]),
        "public": ({"isPublic": True}, [doc]),
        "folder": ({"folder": "x/y"}, [img]),
        "root folder": ({"folder": None}, [doc]),
        "tags all": ({"tags": ["a", "B"]}, [img]),
        "tags none": ({"tags": ["a", "c"]}, []),
        "search name": ({"search": "syllab"}, [doc]),
        "search caption": ({"search": "week one"}, [doc]),
        "search wildcard is literal": ({"search": "%"}, []),
        "search folds non-ASCII": ({"search": "éCOLE"}, [doc]),
        "status": ({"status": "READY", "userId": "u-1"}, [doc, img]),
        "after": ({"createdAfter": img["createdAt"]}, [doc]),
        "before": ({"createdBefore": doc["createdAt"]}, [img]),
    }
    for label, (query, expected) in cases.items():
        assert _ids(service.findAll(query)) == [m["id"] for m in expected], label


def test_by_user_and_by_entity(service):
    mine = _upload(service, entityType="course", entityId="7")
    act_as(service, "u-2")
    public = service.upload_file(
        upload_data(user_id="u-2", isPublic=True, entityType="course", entityId="7")
    )
    private = service.upload_file(upload_data(png_bytes(color="blue"), user_id="u-2"))
    assert _ids(service.findByUser("u-2")) == [private["id"], public["id"]]
    assert _ids(service.findByEntity("course", "7")) == [public["id"]]
    act_as(service, "u-1")
    assert _ids(service.findByUser("u-2")) == [public["id"]]
    assert _ids(service.findByEntity("course", "7")) == [public["id"], mine["id"]]
    with pytest.raises(ValidationError, match=r"query\.userId"):
        service.findByUser("u-2", {"userId": "u-1"})


def test_sort_by_size_and_name(service):
    small = service.upload_file(upload_data(png_bytes(1, 1), name="b.png"))
    big = service.upload_file(upload_data(pdf_bytes() + b"%" * 500, name="A.pdf"))
    assert _ids(service.findAll({"sort": "-size"})) == [big["id"], small["id"]]
    assert _ids(service.findAll({"sort": "size"})) == [small["id"], big["id"]]
    assert _ids(service.findAll({"sort": "originalName"})) == [big["id"], small["id"]]


def test_total(service):
    for color in ("red", "green", "blue"):
        _upload(service, color)
    page = service.findAll({"limit": 2, "withTotal": True})
    assert page["total"] == 3 and len(page["items"]) == 2 and page["nextCursor"]
    assert "total" not in service.findAll({"limit": 2})


@pytest.mark.parametrize("sort", ["-createdAt", "createdAt", "size", "-size", "originalName"])
def test_walking_pages_returns_every_row_once(service, sort):
    expected = {_upload(service, f"#{i:06x}", name=f"n{i % 3}.png")["id"] for i in range(25)}
    seen, cursor = [], None
    while True:
        query = {"limit": 4, "sort": sort} | ({"cursor": cursor} if cursor else {})
        page = service.findAll(query)
        seen += _ids(page)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == expected


def test_paging_while_rows_are_inserted_skips_and_repeats_nothing(service, catalog):
    """New rows land in front of a newest-first walk, so the walk sees exactly the old rows."""
    before = {_upload(service, f"#{i:06x}")["id"] for i in range(30)}

    def insert_more():
        # Another worker of the same service, writing while this one pages.
        for i in range(30):
            data = load(UploadFileSchema(), upload_data(png_bytes(color=f"#{i + 100:06x}")))
            catalog.upload_file(Caller("u-1"), data)
            eventlet.sleep(0)

    inserting = eventlet.spawn(insert_more)
    seen, cursor = [], None
    while True:
        page = service.findAll({"limit": 3} | ({"cursor": cursor} if cursor else {}))
        seen += _ids(page)
        eventlet.sleep(0)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    inserting.wait()
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"limit": "20"}, "limit"),
        ({"sort": "id"}, "sort"),
        ({"type": "PICTURE"}, "type"),
        ({"mimeType": "image"}, "mimeType"),
        ({"createdAfter": "last tuesday"}, "createdAfter"),
        ({"entityId": "1"}, "entityType"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["size",1,"x"]').decode()}, "cursor"),
        (
            {
                "cursor": base64.urlsafe_b64encode(
                    json.dumps(["-createdAt", 5, "x"]).encode()
                ).decode()
            },
            "cursor",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_query(service, query, field):
    with pytest.raises(ValidationError) as caught:
        service.findAll(query)
    assert field in caught.value.fields


def test_query_must_be_an_object(service):
    with pytest.raises(ValidationError, match="query: Must be a JSON object"):
        service.findAll("type=IMAGE")


def test_include_deleted_is_for_admin_and_internal_calls(service):
    media = _upload(service)
    service.remove(media["id"])
    with pytest.raises(Forbidden, match="includeDeleted"):
        service.findAll({"includeDeleted": True})
    act_as(service, "boss", "admin")
    assert _ids(service.findAll({"includeDeleted": True})) == [media["id"]]


def test_the_fast_record_dump_matches_the_schema(service, catalog):
    """dump_media precomputes MediaSchema; both must give the same record."""
    media = service.upload_file(
        upload_data(metadata={"a": [1, {"b": None}]}, tags=["x"], entityType="c", entityId="1")
    )
    service.remove(media["id"])
    act_as(service, None)
    with catalog.sessions() as session:
        row = session.get(Media, media["id"])
    url = catalog.urls.for_media(row)
    assert dump_media(row, url) == MediaSchema().dump(row) | {"url": url}
    assert dump_media(row, url)["deletedAt"].endswith("Z")
