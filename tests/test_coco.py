"""Tests for geoseg.coco: category ids in model class order, RLE, writer/reader round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from geoseg.coco import (
    ANNOTATIONS_FILE,
    categories,
    category_ids,
    coco_document,
    decode_segmentation,
    encode_rle,
    encode_rle_crop,
    label_map,
    mask_bbox,
    read_coco,
    segmentation_from_mask,
    write_coco,
)
from geoseg.errors import LabelError

MODEL_CLASSES = ("vehicle", "ship", "building")  # deliberately not alphabetical


def test_category_ids_follow_model_class_order():
    assert category_ids(MODEL_CLASSES) == {"vehicle": 1, "ship": 2, "building": 3}
    assert categories(MODEL_CLASSES) == [
        {"id": 1, "name": "vehicle", "supercategory": "object"},
        {"id": 2, "name": "ship", "supercategory": "object"},
        {"id": 3, "name": "building", "supercategory": "object"},
    ]
    with pytest.raises(LabelError, match="duplicate class names"):
        category_ids(("a", "b", "a"))


def test_label_map_matches_by_name():
    cats = categories(("building", "ship", "tree"))
    mapping, unknown = label_map(cats, MODEL_CLASSES)
    assert mapping == {1: 3, 2: 2}  # building -> model label 3, ship -> 2
    assert unknown == ["tree"]


def _masks():
    rng = np.random.default_rng(3)
    blob = rng.random((20, 30)) > 0.6
    ring = np.zeros((20, 30), bool)
    ring[2:12, 3:13] = True
    ring[5:9, 6:10] = False  # a hole
    rect = np.zeros((20, 30), bool)
    rect[10:18, 15:28] = True
    return [blob, ring, rect]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_rle_and_segmentation_round_trip(k):
    m = _masks()[k]
    rle = encode_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [20, 30]
    assert np.array_equal(decode_segmentation(rle, 20, 30), m)
    seg = segmentation_from_mask(m)
    assert np.array_equal(decode_segmentation(seg, 20, 30).astype(bool), m)
    if k == 2:
        assert isinstance(seg, list)  # a hole-free footprint is stored as polygons
    if k == 1:
        assert isinstance(seg, dict)  # a footprint with a hole as RLE
    raw = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # bytes counts
    assert np.array_equal(decode_segmentation(raw, 20, 30), m)
    flat = m.T.ravel().astype(np.int8)  # uncompressed RLE: column-major runs, zeros first
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    runs = np.diff(np.concatenate([[0], edges])).tolist()
    uncompressed = {"size": [20, 30], "counts": runs}
    assert np.array_equal(decode_segmentation(uncompressed, 20, 30), m)


def test_rle_crop_equals_whole_image_rle():
    m = _masks()[0][3:11, 4:19]
    full = np.zeros((20, 30), bool)
    full[3:11, 4:19] = m
    assert encode_rle_crop(m, 4, 3, 30, 20) == encode_rle(full)
    assert mask_bbox(_masks()[2]) == [15.0, 10.0, 13.0, 8.0]


def test_writer_reader_round_trip_in_model_class_order(tmp_path):
    masks = _masks()
    labels = [3, 1, 2]  # 1-based model labels
    anns = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": lab,
            "segmentation": segmentation_from_mask(m),
            "area": float(m.sum()),
            "bbox": mask_bbox(m),
            "iscrowd": 0,
        }
        for i, (m, lab) in enumerate(zip(masks, labels, strict=True))
    ]
    images = [{"id": 1, "file_name": "images/a.tif", "width": 30, "height": 20}]
    path = write_coco(
        tmp_path / ANNOTATIONS_FILE,
        images,
        anns,
        MODEL_CLASSES,
        info={"description": "test"},
        extra={"geoseg": {"classes": list(MODEL_CLASSES)}},
    )
    doc = json.loads(path.read_text())
    assert list(doc) == ["info", "images", "annotations", "categories", "geoseg"]
    back = read_coco(path)
    assert back.class_names == MODEL_CLASSES
    assert back.extra["geoseg"]["classes"] == list(MODEL_CLASSES)
    assert back.images == images
    by_image = back.annotations_by_image()
    assert [a["category_id"] for a in by_image[1]] == labels
    for ann, m in zip(by_image[1], masks, strict=True):
        assert np.array_equal(decode_segmentation(ann["segmentation"], 20, 30).astype(bool), m)
    # pycocotools reads the same file and agrees on names and masks
    coco = COCO(str(path))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {
        1: "vehicle",
        2: "ship",
        3: "building",
    }
    for ann, m in zip(coco.loadAnns(coco.getAnnIds()), masks, strict=True):
        assert np.array_equal(coco.annToMask(ann).astype(bool), m)
    # a reader with another class order maps by name
    mapping, unknown = label_map(back.categories, ("building", "ship", "vehicle"))
    assert mapping == {1: 3, 2: 2, 3: 1} and unknown == []
    assert list(back.annotations_by_image(keep={1: 3})[1]) == [by_image[1][1]]


def test_chips_and_dataset_share_category_ids(tmp_path):
    geopandas = pytest.importorskip("geopandas")
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box

    from geoseg.chips import make_chips
    from geoseg.train import ChipDataset

    x0, y0 = 500_000.0, 4_000_000.0
    data = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    with rasterio.open(
        tmp_path / "s.tif",
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(x0, y0, 0.5, 0.5),
    ) as ds:
        ds.write(data)
    labels = geopandas.GeoDataFrame(
        {"class": ["ship", "building", "vehicle"]},
        geometry=[
            box(x0 + 2, y0 - 10, x0 + 8, y0 - 3),
            box(x0 + 15, y0 - 25, x0 + 22, y0 - 14),
            box(x0 + 3, y0 - 28, x0 + 6, y0 - 25),
        ],
        crs="EPSG:32633",
    )
    s = make_chips(
        tmp_path / "s.tif", labels, tmp_path / "c", size=64, overlap=0, classes=MODEL_CLASSES
    )
    coco = read_coco(s.annotations_path)
    assert coco.categories == categories(MODEL_CLASSES)
    names = {a["category_id"] for a in coco.annotations}
    assert names == {1, 2, 3}
    ds = ChipDataset([tmp_path / "c"], classes=MODEL_CLASSES)
    _, target = ds[0]
    got = sorted(target["labels"].tolist())
    assert got == sorted(a["category_id"] for a in coco.annotations)


def test_read_coco_errors_name_the_file(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(LabelError, match=rf"{missing}: cannot read the COCO annotations.*chips"):
        read_coco(missing, hint="is it a folder written by `geoseg chips`?")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(LabelError, match=rf"{bad}: not valid JSON"):
        read_coco(bad)
    geo = tmp_path / "geo.json"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [], "images": {}}))
    with pytest.raises(LabelError, match=rf"{geo}: not a COCO instance file"):
        read_coco(geo)


def test_coco_document_refuses_to_shadow_keys():
    with pytest.raises(ValueError, match="images"):
        coco_document([], [], ("a",), extra={"images": []})
