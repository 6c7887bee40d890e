"""Tests for geoseg.importers: COCO, DOTA, YOLO-OBB and vector fixtures -> chip folders.

Every fixture is written here, in its own format, from a few known shapes on small PNG/JPEG
images; the imported chip folder is read back with geoseg.coco's reader (and pycocotools) and
its masks compared with the shapes rasterised by the pixel-centre rule.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from PIL import Image
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.affinity import rotate
from shapely.geometry import Polygon, box

from geoseg.cli import cli
from geoseg.coco import decode_segmentation, encode_rle, read_coco
from geoseg.errors import BandError, ConfigError, LabelError
from geoseg.importers import (
    ClassMapping,
    format_summary,
    import_coco,
    import_dataset,
    import_dota,
    import_vectors,
    import_yolo_obb,
    output_classes,
)

W, H = 96, 80


# --------------------------------------------------------------------------------------------
# helpers


def footprint(geom, height=H, width=W, offset=(0, 0)):
    """Pixels whose centres lie in ``geom`` (image pixels), on a ``height x width`` grid."""
    return rasterize(
        [(geom, 1)],
        out_shape=(height, width),
        transform=Affine.translation(*offset),
        dtype="uint8",
    ).astype(bool)


def iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def write_image(path: Path, shapes, *, mode="RGB", seed=0, size=(W, H)):
    """A noisy image with the shapes painted in (PNG/JPEG by suffix)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(20, 70, size=(h, w, 3)).astype(np.uint8)
    for k, geom in enumerate(shapes):
        img[footprint(geom, h, w)] = (200, 120 + 20 * k, 60)
    if mode == "L":
        Image.fromarray(img[..., 0]).save(path)
    elif mode == "RGBA":
        rgba = np.dstack([img, np.full((h, w), 255, np.uint8)])
        Image.fromarray(rgba, "RGBA").save(path)
    else:
        Image.fromarray(img).save(path)
    return path


def read_folder(out: Path):
    """``{source image name: [(class, mask), ...]}`` of a chip folder with one chip per image."""
    coco = read_coco(out / "annotations.json")
    names = {c["id"]: c["name"] for c in coco.categories}
    by_image = coco.annotations_by_image()
    result = {}
    for im in coco.images:
        anns = by_image.get(im["id"], [])
        result[Path(im["source_image"]).stem] = [
            (
                names[a["category_id"]],
                decode_segmentation(a["segmentation"], im["height"], im["width"]).astype(bool),
            )
            for a in anns
        ]
    return coco, result


def match_masks(expected, got, min_iou):
    """Every expected (class, geometry) has a got (class, mask) of the class with IoU >= min."""
    assert len(got) == len(expected), (len(got), len(expected))
    for cls, geom in expected:
        ref = footprint(geom)
        best = max((iou(ref, m) for c, m in got if c == cls), default=0.0)
        assert best >= min_iou, (cls, best)


RECT_A = box(10, 12, 30, 22)  # 20 x 10
RECT_B = box(50, 40, 58, 60)  # 8 x 20
RECT_C = box(70, 8, 90, 28)
ROT = rotate(box(40, 15, 64, 27), 30, origin="centroid")  # an oriented box


# --------------------------------------------------------------------------------------------
# class mapping


def test_mapping_parses_rules_and_drops_the_rest():
    m = ClassMapping.parse(["Small_Vehicle,Large_Vehicle=vehicle", "ship -> boat"])
    assert m.target("small-vehicle") == "vehicle"
    assert m.target("LARGE VEHICLE") == "vehicle"
    assert m.target("Ship") == "boat"
    assert m.target("plane") is None
    assert m.targets() == ["vehicle", "boat"]
    assert ClassMapping.parse(["car=vehicle"], keep=["plane"]).target("plane") == "plane"
    assert ClassMapping.parse(["car=vehicle"], keep_all=True).target("plane") == "plane"
    assert ClassMapping().target("anything") == "anything"
    assert ClassMapping().is_identity
    assert ClassMapping.coerce({"vehicle": ["car", "truck"]}).target("truck") == "vehicle"
    assert ClassMapping.coerce({"car": "vehicle"}).target("car") == "vehicle"
    assert ClassMapping.coerce("car=vehicle").target("car") == "vehicle"
    with pytest.raises(ConfigError, match="SOURCE"):
        ClassMapping.parse(["vehicle"])
    with pytest.raises(ConfigError, match="both"):
        ClassMapping.parse(["car=vehicle", "car=truck"])


def test_output_class_order_follows_rules_then_source_order():
    m = ClassMapping.parse(["b=x"], keep=["c", "a"])
    present = {"x": 2, "a": 1, "c": 4}
    assert output_classes(m, ["a", "b", "c"], present) == ("x", "a", "c")
    assert output_classes(m, ["a", "b", "c"], present, ["c", "x"]) == ("c", "x")
    assert output_classes(ClassMapping(), ["z", "y"], {"y": 1, "z": 1}) == ("z", "y")


# --------------------------------------------------------------------------------------------
# COCO


def coco_fixture(root: Path, *, bbox_only=False):
    """Two images (PNG, JPEG), polygons + RLE + a crowd object + a class to drop."""
    images_dir = root / "imgs"
    images_dir.mkdir(parents=True)
    write_image(images_dir / "a.png", [RECT_A, RECT_B])
    write_image(images_dir / "b.jpg", [RECT_C, ROT], seed=1)
    ring = lambda g: [float(v) for xy in list(g.exterior.coords)[:-1] for v in xy]  # noqa: E731
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [ring(RECT_A)], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [ring(RECT_B)], "iscrowd": 0},
        {
            "id": 3,
            "image_id": 2,
            "category_id": 1,
            "segmentation": encode_rle(footprint(RECT_C)),
            "iscrowd": 0,
        },
        {"id": 4, "image_id": 2, "category_id": 3, "segmentation": [ring(ROT)], "iscrowd": 0},
        {
            "id": 5,
            "image_id": 2,
            "category_id": 1,
            "segmentation": encode_rle(footprint(box(0, 60, 40, 80))),
            "iscrowd": 1,
        },
    ]
    for a in anns:
        a["bbox"] = [0, 0, 1, 1]
    if bbox_only:
        anns[0]["segmentation"] = []
        anns[0]["bbox"] = [10, 12, 20, 10]
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": W, "height": H},
            {"id": 2, "file_name": "sub/b.jpg", "width": W, "height": H},
        ],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "Small_Vehicle"},
            {"id": 2, "name": "Large_Vehicle"},
            {"id": 3, "name": "plane"},
        ],
    }
    path = root / "train.json"
    path.write_text(json.dumps(doc))
    return path, images_dir


def test_coco_round_trip_with_mapping(tmp_path):
    ann, images = coco_fixture(tmp_path)
    s = import_coco(
        ann,
        tmp_path / "out",
        images_dir=images,
        gsd=0.3,
        mapping=["Small_Vehicle,Large_Vehicle=vehicle"],
        keep_empty_fraction=1.0,
    )
    assert s.classes == ("vehicle",)
    assert s.instances == {"vehicle": 3}
    assert s.dropped == {"plane": 1}
    assert s.n_crowd == 1
    assert s.n_images == 2 and s.chips.n_chips == 2
    assert s.gsd == pytest.approx(0.3) and s.gsd_source == "stated"
    coco, got = read_folder(tmp_path / "out")
    match_masks([("vehicle", RECT_A), ("vehicle", RECT_B)], got["a"], min_iou=1.0)
    match_masks([("vehicle", RECT_C)], got["b"], min_iou=1.0)
    block = coco.extra["geoseg"]
    assert block["gsd"] == pytest.approx(0.3) and block["gsd_units"] == "metre"
    assert block["source"]["format"] == "coco"
    assert block["source"]["dropped"] == {"plane": 1}
    assert block["source"]["class_mapping"]["map"] == {
        "vehicle": ["Small_Vehicle", "Large_Vehicle"]
    }
    assert block["classes"] == ["vehicle"] and block["bands"] == [1, 2, 3]
    assert block["tile_size"] == W
    assert len(block["norm_stats"]["low"]) == 3
    # the chip is the image, in its pixel frame at the stated GSD, no CRS
    chip = tmp_path / "out" / coco.images[0]["file_name"]
    with rasterio.open(chip) as ds:
        assert ds.crs is None
        assert ds.transform == Affine(0.3, 0, 0, 0, -0.3, 0)
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (W, H, 3, "uint8")
        assert np.array_equal(
            ds.read(), np.moveaxis(np.asarray(Image.open(images / "a.png")), -1, 0)
        )
    # pycocotools reads the file and gives the same masks
    from pycocotools.coco import COCO

    api = COCO(str(tmp_path / "out" / "annotations.json"))
    for a in api.dataset["annotations"]:
        img = api.imgs[a["image_id"]]
        assert api.annToMask(a).sum() == a["area"] and img["width"] == W


def test_coco_keep_and_rle_exact(tmp_path):
    ann, images = coco_fixture(tmp_path)
    s = import_coco(
        ann,
        tmp_path / "out",
        images_dir=images,
        gsd=0.5,
        mapping=ClassMapping.parse(["Small_Vehicle,Large_Vehicle=vehicle"], keep=["plane"]),
        keep_empty_fraction=1.0,
    )
    assert s.classes == ("vehicle", "plane") and s.dropped == {}
    _, got = read_folder(tmp_path / "out")
    match_masks([("vehicle", RECT_C), ("plane", ROT)], got["b"], min_iou=0.85)
    # the RLE object comes back exactly
    rle_mask = next(m for c, m in got["b"] if c == "vehicle")
    assert np.array_equal(rle_mask, footprint(RECT_C))


def test_coco_bbox_only_refused_or_box_masks(tmp_path):
    ann, images = coco_fixture(tmp_path, bbox_only=True)
    with pytest.raises(LabelError, match=r"train\.json.*--box-masks"):
        import_coco(ann, tmp_path / "out", images_dir=images, gsd=0.3)
    s = import_coco(
        ann, tmp_path / "out", images_dir=images, gsd=0.3, box_masks=True, keep_empty_fraction=1
    )
    assert s.n_box_masks == 1
    _, got = read_folder(tmp_path / "out")
    small = [m for c, m in got["a"] if c == "Small_Vehicle"]
    assert len(small) == 1 and np.array_equal(small[0], footprint(RECT_A))


def test_coco_errors_name_the_file(tmp_path):
    ann, images = coco_fixture(tmp_path)
    with pytest.raises(ConfigError, match=r"a\.png.*--gsd"):
        import_coco(ann, tmp_path / "out", images_dir=images)
    with pytest.raises(LabelError, match=r"train\.json: no usable object.*plane \(1\)"):
        import_coco(ann, tmp_path / "out", images_dir=images, gsd=0.3, mapping=["tank=vehicle"])
    with pytest.raises(LabelError, match=r"train\.json: image 'a\.png' not found"):
        import_coco(ann, tmp_path / "out", images_dir=tmp_path, gsd=0.3)
    far = json.loads(ann.read_text())
    for a in far["annotations"]:
        if isinstance(a["segmentation"], list):
            a["segmentation"] = [[500, 500, 520, 500, 520, 520, 500, 520]]
        else:
            a["iscrowd"] = 1
    (tmp_path / "far.json").write_text(json.dumps(far))
    with pytest.raises(LabelError, match=r"far\.json: no object left inside the images"):
        import_coco(tmp_path / "far.json", tmp_path / "o4", images_dir=images, gsd=0.3)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LabelError, match=r"bad\.json"):
        import_coco(bad, tmp_path / "out", gsd=0.3)


def test_coco_images_found_in_images_subfolder(tmp_path):
    ann, images = coco_fixture(tmp_path)
    images.rename(tmp_path / "images")
    s = import_coco(ann, tmp_path / "out", gsd=0.3, keep_empty_fraction=1)
    assert s.n_images == 2


# --------------------------------------------------------------------------------------------
# DOTA


def corners(geom):
    return list(geom.exterior.coords)[:4]


def dota_fixture(root: Path):
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    write_image(root / "images" / "P0001.png", [RECT_A, ROT])
    write_image(root / "images" / "P0002.png", [RECT_B], seed=2)
    write_image(root / "images" / "P0003.png", [], seed=3)  # no label file: skipped

    def line(geom, cls, difficult=0):
        return " ".join(f"{v:.2f}" for xy in corners(geom) for v in xy) + f" {cls} {difficult}"

    (root / "labelTxt" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.25\n"
        + line(RECT_A, "small-vehicle")
        + "\n"
        + line(ROT, "large-vehicle")
        + "\n"
        + line(box(80, 60, 90, 70), "plane", 1)
        + "\n"
    )
    (root / "labelTxt" / "P0002.txt").write_text(
        "imagesource:GoogleEarth\ngsd:null\n" + line(RECT_B, "ship", 1) + "\n"
    )
    return root


def test_dota_round_trip_gsd_header_and_mapping(tmp_path):
    src = dota_fixture(tmp_path / "DOTA")
    s = import_dota(
        src,
        tmp_path / "out",
        gsd=0.5,
        mapping=["Small_Vehicle,Large_Vehicle=vehicle", "ship=ship"],
        keep_empty_fraction=1.0,
    )
    assert s.classes == ("vehicle", "ship")
    assert s.instances == {"vehicle": 2, "ship": 1}
    assert s.dropped == {"plane": 1}
    assert s.n_images == 2
    coco, got = read_folder(tmp_path / "out")
    match_masks([("vehicle", RECT_A), ("vehicle", ROT)], got["P0001"], min_iou=0.85)
    match_masks([("ship", RECT_B)], got["P0002"], min_iou=1.0)
    # oriented box: exactly the pixel-centre footprint, close to the true shape
    rot = max((m for c, m in got["P0001"] if c == "vehicle"), key=lambda m: iou(m, footprint(ROT)))
    assert np.array_equal(rot, footprint(ROT))
    assert abs(rot.sum() - ROT.area) / ROT.area < 0.1
    # per-image GSD: the header's, else the stated one; the folder records the median
    gsds = {Path(im["source_image"]).stem: im["gsd"] for im in coco.images}
    assert gsds == {"P0001": pytest.approx(0.25), "P0002": pytest.approx(0.5)}
    assert "header" in s.gsd_source and "stated" in s.gsd_source
    with rasterio.open(tmp_path / "out" / coco.images[0]["file_name"]) as ds:
        assert ds.transform.a == pytest.approx(0.25)


def test_dota_skip_difficult_and_errors(tmp_path):
    src = dota_fixture(tmp_path / "DOTA")
    s = import_dota(src, tmp_path / "out", gsd=0.5, skip_difficult=True, keep_empty_fraction=1)
    assert set(s.instances) == {"small-vehicle", "large-vehicle"}
    with pytest.raises(ConfigError, match=r"P0002\.png.*P0002\.txt states no GSD.*--gsd"):
        import_dota(src, tmp_path / "out2")
    (src / "labelTxt" / "P0002.txt").write_text("gsd:0.3\n1 2 3 4 5 6 7 ship 0\n")
    with pytest.raises(LabelError, match=r"P0002\.txt:2"):
        import_dota(src, tmp_path / "out3", gsd=0.5)
    (src / "labelTxt" / "P0002.txt").write_text("gsd:0.3\n")
    (src / "labelTxt" / "P0009.txt").write_text("")
    with pytest.raises(LabelError, match=r"P0009\.txt: no image"):
        import_dota(src, tmp_path / "out4", gsd=0.5)


# --------------------------------------------------------------------------------------------
# YOLO-OBB


def yolo_line(index, geom, w=W, h=H):
    return f"{index} " + " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in corners(geom))


def yolo_fixture(root: Path, *, names_file="data.yaml"):
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    write_image(root / "images" / "train" / "a.png", [RECT_A, ROT])
    write_image(root / "images" / "train" / "b.jpg", [RECT_B], seed=4)
    write_image(root / "images" / "val" / "c.png", [RECT_C], seed=5)
    (root / "labels" / "train" / "a.txt").write_text(
        yolo_line(0, RECT_A) + "\n" + yolo_line(1, ROT) + "\n"
    )
    (root / "labels" / "train" / "b.txt").write_text(yolo_line(2, RECT_B) + "\n")
    (root / "labels" / "val" / "c.txt").write_text(yolo_line(0, RECT_C) + "\n")
    if names_file == "data.yaml":
        (root / "data.yaml").write_text(
            "path: .\ntrain: images/train\nval: images/val\n"
            "names:\n  0: Small_Vehicle\n  1: Large_Vehicle\n  2: storage-tank\n"
        )
    else:
        (root / "classes.txt").write_text("Small_Vehicle\nLarge_Vehicle\nstorage-tank\n")
    return root


def test_yolo_obb_round_trip_from_data_yaml(tmp_path):
    root = yolo_fixture(tmp_path / "yolo")
    s = import_yolo_obb(
        root / "data.yaml",
        tmp_path / "out",
        gsd=0.3,
        mapping={"vehicle": ["Small_Vehicle", "Large_Vehicle"]},
        keep_empty_fraction=1.0,
    )
    assert s.classes == ("vehicle",)
    assert s.instances == {"vehicle": 2} and s.dropped == {"storage-tank": 1}
    assert s.n_images == 2  # the train split only
    _, got = read_folder(tmp_path / "out")
    match_masks([("vehicle", RECT_A), ("vehicle", ROT)], got["a"], min_iou=0.85)
    assert got["b"] == []
    s = import_yolo_obb(root / "data.yaml", tmp_path / "val", gsd=0.3, split="val")
    _, got = read_folder(tmp_path / "val")
    match_masks([("Small_Vehicle", RECT_C)], got["c"], min_iou=0.95)


def test_yolo_obb_folder_with_classes_txt_and_errors(tmp_path):
    root = yolo_fixture(tmp_path / "yolo", names_file="classes.txt")
    s = import_yolo_obb(root, tmp_path / "out", gsd=0.3, keep_empty_fraction=1.0)
    assert s.n_images == 3
    assert s.classes == ("Small_Vehicle", "Large_Vehicle", "storage-tank")
    (root / "labels" / "train" / "b.txt").write_text("7 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n")
    with pytest.raises(LabelError, match=r"b\.txt:1: class index 7"):
        import_yolo_obb(root, tmp_path / "out2", gsd=0.3)
    (root / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.2 0.1\n")
    with pytest.raises(LabelError, match=r"b\.txt:1.*--box-masks"):
        import_yolo_obb(root, tmp_path / "out3", gsd=0.3)
    s = import_yolo_obb(root, tmp_path / "out4", gsd=0.3, box_masks=True, keep_empty_fraction=1)
    assert s.n_box_masks == 1
    (root / "labels" / "train" / "b.txt").write_text("0 10 20 30 20 30 40 10 40\n")
    with pytest.raises(LabelError, match=r"b\.txt:1.*normalised"):
        import_yolo_obb(root, tmp_path / "out5", gsd=0.3)


# --------------------------------------------------------------------------------------------
# vector files


def test_vector_labels_in_image_pixels(tmp_path):
    write_image(tmp_path / "scene.png", [RECT_A, RECT_B, ROT])
    gdf = gpd.GeoDataFrame(
        {"kind": ["Small_Vehicle", "Large_Vehicle", "plane"]}, geometry=[RECT_A, RECT_B, ROT]
    )
    gdf.to_file(tmp_path / "labels.geojson")
    with pytest.raises(ConfigError, match=r"scene\.png.*--gsd"):
        import_vectors(
            tmp_path / "labels.geojson", tmp_path / "scene.png", tmp_path / "o", class_column="kind"
        )
    s = import_vectors(
        tmp_path / "labels.geojson",
        tmp_path / "scene.png",
        tmp_path / "out",
        gsd=0.3,
        class_column="kind",
        mapping=["Small_Vehicle,Large_Vehicle=vehicle"],
        size=128,
        keep_empty_fraction=1.0,
    )
    assert s.classes == ("vehicle",) and s.dropped == {"plane": 1}
    coco = read_coco(tmp_path / "out" / "annotations.json")
    assert coco.extra["geoseg"]["gsd"] == pytest.approx(0.3)
    assert coco.extra["geoseg"]["gsd_units"] == "metre"
    assert coco.extra["geoseg"]["source"]["dropped"] == {"plane": 1}
    im = coco.images[0]
    masks = [
        decode_segmentation(a["segmentation"], im["height"], im["width"]) for a in coco.annotations
    ]
    for geom in (RECT_A, RECT_B):
        ref = footprint(geom, im["height"], im["width"])
        assert max(iou(ref, m.astype(bool)) for m in masks) == 1.0
    with rasterio.open(tmp_path / "out" / im["file_name"]) as ds:
        assert ds.crs is None and ds.transform.a == pytest.approx(0.3)
        assert ds.transform.e == pytest.approx(-0.3)

    # the same labels drawn in QGIS on the bare image (y = -row) give the same masks
    flipped = gdf.copy()
    flipped.geometry = flipped.geometry.scale(1, -1, origin=(0, 0))
    flipped.to_file(tmp_path / "qgis.geojson")
    import_vectors(
        tmp_path / "qgis.geojson",
        tmp_path / "scene.png",
        tmp_path / "out_q",
        gsd=0.3,
        class_column="kind",
        mapping=["Small_Vehicle,Large_Vehicle=vehicle"],
        size=128,
        keep_empty_fraction=1.0,
    )
    q = read_coco(tmp_path / "out_q" / "annotations.json")
    assert [a["segmentation"] for a in q.annotations] == [
        a["segmentation"] for a in coco.annotations
    ]


def test_vector_georeferenced_reuses_chips(tmp_path):
    res, x0, y0 = 0.5, 500000.0, 4000000.0
    data = np.random.default_rng(0).integers(0, 255, (3, H, W), dtype=np.uint8)
    with rasterio.open(
        tmp_path / "scene.tif",
        "w",
        driver="GTiff",
        width=W,
        height=H,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(x0, y0, res, res),
    ) as ds:
        ds.write(data)
    to_crs = lambda g: Polygon([(x0 + res * x, y0 - res * y) for x, y in g.exterior.coords])  # noqa: E731
    gdf = gpd.GeoDataFrame(
        {"class": ["car", "truck", "tree"]},
        geometry=[to_crs(RECT_A), to_crs(RECT_B), to_crs(RECT_C)],
        crs="EPSG:32633",
    ).to_crs("EPSG:4326")
    gdf.to_file(tmp_path / "labels.gpkg")
    s = import_vectors(
        tmp_path / "labels.gpkg",
        tmp_path / "scene.tif",
        tmp_path / "out",
        gsd=0.3,  # ignored: the scene is georeferenced
        mapping=["car,truck=vehicle"],
        size=128,
        keep_empty_fraction=1.0,
    )
    assert s.classes == ("vehicle",) and s.dropped == {"tree": 1}
    assert s.gsd == pytest.approx(0.5) and s.gsd_source == "georeference"
    coco = read_coco(tmp_path / "out" / "annotations.json")
    assert coco.extra["geoseg"]["crs_wkt"] is not None
    assert len(coco.annotations) == 2


def test_vector_split_by_area(tmp_path):
    write_image(tmp_path / "scene.png", [RECT_A, RECT_C], size=(W, H))
    gpd.GeoDataFrame({"class": ["car", "car"]}, geometry=[RECT_A, RECT_C]).to_file(
        tmp_path / "labels.geojson"
    )
    s = import_dataset(
        "vector",
        tmp_path / "labels.geojson",
        tmp_path / "out",
        image=tmp_path / "scene.png",
        gsd=0.3,
        val_fraction=0.3,
        size=32,
        overlap=4,
        keep_empty_fraction=1.0,
    )
    assert s.val is not None
    assert s.chips.out_dir.endswith("train") and s.val.out_dir.endswith("val")
    assert "validation" in format_summary(s)


# --------------------------------------------------------------------------------------------
# the writer's rules: cutting, resampling, bands


def test_large_image_is_cut_and_labels_follow_the_windows(tmp_path):
    big = (200, 150)
    shapes = [box(20, 20, 60, 44), rotate(box(90, 60, 150, 84), 20), box(150, 110, 190, 140)]
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "big.png", shapes, size=big)
    doc = {
        "images": [{"id": 1, "file_name": "big.png", "width": big[0], "height": big[1]}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[v for xy in list(g.exterior.coords)[:-1] for v in xy]],
                "bbox": list(g.bounds),
                "iscrowd": 0,
            }
            for k, g in enumerate(shapes)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    # a building with a courtyard, as RLE: stored as whole-chip RLE (a polygon has no hole)
    donut = box(62, 100, 100, 140).difference(box(72, 110, 90, 130))
    shapes.append(donut)
    doc["annotations"].append(
        {
            "id": 9,
            "image_id": 1,
            "category_id": 1,
            "segmentation": encode_rle(footprint(donut, big[1], big[0])),
            "bbox": list(donut.bounds),
            "iscrowd": 0,
        }
    )
    (tmp_path / "a.json").write_text(json.dumps(doc))
    s = import_coco(
        tmp_path / "a.json",
        tmp_path / "out",
        images_dir=tmp_path / "imgs",
        gsd=0.5,
        size=64,
        overlap=8,
        min_visible_fraction=0.0,
        min_visible_pixels=0.0,
        keep_empty_fraction=1.0,
    )
    coco = read_coco(tmp_path / "out" / "annotations.json")
    assert s.chips.n_chips == len(coco.images) > 4
    truth = np.zeros((big[1], big[0]), bool)
    for g in shapes:
        truth |= footprint(g, big[1], big[0])
    by_image = coco.annotations_by_image()
    n_rle = 0
    for im in coco.images:
        c, r, w, h = im["window"]
        assert (w, h) == (im["width"], im["height"]) and w <= 64 and h <= 64
        union = np.zeros((h, w), bool)
        for a in by_image.get(im["id"], []):
            union |= decode_segmentation(a["segmentation"], h, w).astype(bool)
        assert np.array_equal(union, truth[r : r + h, c : c + w]), im["file_name"]
        n_rle += sum(isinstance(a["segmentation"], dict) for a in by_image.get(im["id"], []))
        with rasterio.open(tmp_path / "out" / im["file_name"]) as ds:
            assert ds.transform == Affine(0.5, 0, 0.5 * c, 0, -0.5, -0.5 * r)
    assert n_rle >= 1  # the courtyard


def test_target_gsd_resamples_images_and_labels(tmp_path):
    ann, images = coco_fixture(tmp_path)
    s = import_coco(
        ann,
        tmp_path / "out",
        images_dir=images,
        gsd=0.3,
        target_gsd=0.6,
        keep_empty_fraction=1.0,
    )
    assert s.gsd == pytest.approx(0.6) and s.gsd_source == "resampled"
    coco, got = read_folder(tmp_path / "out")
    assert {(im["width"], im["height"]) for im in coco.images} == {(W // 2, H // 2)}
    half = lambda g: Polygon([(x / 2, y / 2) for x, y in g.exterior.coords])  # noqa: E731
    ref = footprint(half(RECT_A), H // 2, W // 2)
    assert max(iou(ref, m) for _, m in got["a"]) == 1.0
    with rasterio.open(tmp_path / "out" / coco.images[0]["file_name"]) as ds:
        assert ds.transform.a == pytest.approx(0.6)


def test_bands_alpha_grey_and_mixed_types(tmp_path):
    ann, images = coco_fixture(tmp_path)
    write_image(images / "a.png", [RECT_A, RECT_B], mode="RGBA")
    write_image(images / "b.jpg", [RECT_C], mode="L")
    s = import_coco(ann, tmp_path / "out", images_dir=images, gsd=0.3, keep_empty_fraction=1)
    coco = read_coco(tmp_path / "out" / "annotations.json")
    for im in coco.images:
        with rasterio.open(tmp_path / "out" / im["file_name"]) as ds:
            assert ds.count == 3
    assert s.chips.n_chips == 2
    s = import_coco(
        ann, tmp_path / "out1", images_dir=images, gsd=0.3, bands=[1], keep_empty_fraction=1
    )
    assert read_coco(tmp_path / "out1" / "annotations.json").extra["geoseg"]["bands"] == [1]
    with pytest.raises(BandError, match="out of range"):
        import_coco(ann, tmp_path / "out2", images_dir=images, gsd=0.3, bands=[4])
    with rasterio.open(
        images / "b.tif", "w", driver="GTiff", width=W, height=H, count=3, dtype="uint16"
    ) as ds:
        ds.write(np.ones((3, H, W), np.uint16))
    doc = json.loads(ann.read_text())
    doc["images"][1]["file_name"] = "b.tif"
    ann.write_text(json.dumps(doc))
    with pytest.raises(BandError, match=r"b\.tif: pixel type uint16"):
        import_coco(ann, tmp_path / "out3", images_dir=images, gsd=0.3)


def test_overwrite_rule(tmp_path):
    ann, images = coco_fixture(tmp_path)
    import_coco(ann, tmp_path / "out", images_dir=images, gsd=0.3)
    from geoseg.errors import ExportError

    with pytest.raises(ExportError, match="already holds chips"):
        import_coco(ann, tmp_path / "out", images_dir=images, gsd=0.3)
    import_coco(ann, tmp_path / "out", images_dir=images, gsd=0.3, overwrite=True)


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_import_prints_summary_and_names_files_in_errors(tmp_path):
    src = dota_fixture(tmp_path / "DOTA")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        [
            "import",
            "dota",
            str(src),
            "-o",
            str(out),
            "--gsd",
            "0.5",
            "--map",
            "Small_Vehicle,Large_Vehicle=vehicle",
            "--keep-empty",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "vehicle" in res.output and "2" in res.output
    assert "dropped per source class" in res.output
    assert "plane" in res.output and "ship" in res.output
    assert (out / "annotations.json").is_file()
    res = CliRunner().invoke(cli, ["import", "dota", str(src), "-o", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "P0002.txt states no GSD" in res.output and "--gsd" in res.output
    res = CliRunner().invoke(
        cli, ["import", "dota", str(src), "-o", str(tmp_path / "o3"), "--map", "vehicle"]
    )
    assert res.exit_code == 1 and "SOURCE" in res.output
    res = CliRunner().invoke(
        cli, ["import", "vector", str(src / "labelTxt" / "P0001.txt"), "-o", "x"]
    )
    assert res.exit_code == 2 and "--image" in res.output


# --------------------------------------------------------------------------------------------
# training reads it


def test_chip_dataset_reads_imported_folder_and_one_training_step(tmp_path, tiny_config):
    torch = pytest.importorskip("torch")
    from geoseg.config import AugmentConfig, TrainConfig, config_to_dict
    from geoseg.train import ChipDataset, train

    src = dota_fixture(tmp_path / "DOTA")
    import_dota(
        src,
        tmp_path / "chips",
        gsd=0.5,
        mapping=["Small_Vehicle,Large_Vehicle=vehicle", "ship=ship"],
        keep_empty_fraction=1.0,
    )
    ds = ChipDataset([tmp_path / "chips"], classes=("ship", "vehicle"))
    assert len(ds) == 2
    labels = sorted(lab for i in range(len(ds)) for lab in ds.labels_of(i))
    assert labels == [1, 2, 2]  # 1-based into (ship, vehicle)
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert target["masks"].shape[1:] == (H, W)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            TrainConfig(
                train_chips=(tmp_path / "chips",),
                output_dir=tmp_path / "run",
                classes=("ship", "vehicle"),
                model=config_to_dict(tiny_config(min_size=96, max_size=96)),
                pretrained="none",
                epochs=1,
                max_steps=1,
                batch_size=2,
                validate=False,
                augment=AugmentConfig(scale_min=1.0, scale_max=1.0),
            )
        )
    finally:
        torch.set_num_threads(n)
    assert result is not None
    from geoseg.checkpoint import read_meta

    meta = read_meta(tmp_path / "run" / "last.json")
    assert meta.gsd == pytest.approx(0.375)  # the median of 0.25 and 0.5
    assert meta.classes == ("ship", "vehicle")
    assert math.isfinite(meta.tile_size)


def test_coco_with_georeferenced_tiffs_needs_no_gsd(tmp_path):
    (tmp_path / "imgs").mkdir()
    transform = from_origin(500000.0, 4000000.0, 0.4, 0.4)
    with rasterio.open(
        tmp_path / "imgs" / "g.tif",
        "w",
        driver="GTiff",
        width=W,
        height=H,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=transform,
    ) as ds:
        ds.write(np.full((3, H, W), 40, np.uint8))
    ring = [float(v) for xy in list(RECT_A.exterior.coords)[:-1] for v in xy]
    doc = {
        "images": [{"id": 1, "file_name": "g.tif", "width": W, "height": H}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [ring], "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "car"}],
    }
    (tmp_path / "g.json").write_text(json.dumps(doc))
    s = import_coco(tmp_path / "g.json", tmp_path / "out", images_dir=tmp_path / "imgs")
    assert s.gsd == pytest.approx(0.4) and s.gsd_source == "georeference"
    coco, got = read_folder(tmp_path / "out")
    assert coco.extra["geoseg"]["crs_wkt"] is not None
    match_masks([("car", RECT_A)], got["g"], min_iou=1.0)
    with rasterio.open(tmp_path / "out" / coco.images[0]["file_name"]) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == transform
