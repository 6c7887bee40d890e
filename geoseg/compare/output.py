"""Writing what :func:`geoseg.compare.compare` found: files, charts, map, text."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from geoseg.compare.result import STATUS_COLOURS, ChangeFormat, ChangeResult, ChangeStatus
from geoseg.errors import ExportError
from geoseg.io import VectorFormat, atomic_write

__all__ = ["change_map", "format_changes", "plot_timelines", "write_changes"]

logger = logging.getLogger(__name__)


def write_changes(result: ChangeResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` atomically; the format follows the extension (:class:`ChangeFormat`).

    ``.gpkg``: layers ``objects`` (one row per object and pair of dates, with its status),
    ``tracks``, and ``zones`` / ``grid`` (one row per zone or cell and date) when computed.
    ``.csv``: :meth:`ChangeResult.table` (whole area, zones and cells per date). ``.json``:
    :meth:`ChangeResult.to_dict`.

    Raises:
        ExportError: unknown extension, missing folder, or the file cannot be written.
    """
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    try:
        fmt = ChangeFormat(suffix)
    except ValueError as err:
        raise ExportError(
            f"{out}: unknown format {suffix!r} for changes; use one of "
            f"{', '.join('.' + f.value for f in ChangeFormat)}"
        ) from err
    if not out.parent.exists():
        raise ExportError(f"{out}: the folder {out.parent} does not exist; create it first")

    def write(tmp: Path) -> None:
        if fmt is ChangeFormat.CSV:
            result.table().to_csv(tmp, index=False)
        elif fmt is ChangeFormat.JSON:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            layers = [
                ("objects", result.objects),
                ("tracks", result.tracks),
                ("zones", result.zones),
                ("grid", result.grid),
            ]
            written = [(name, gdf) for name, gdf in layers if gdf is not None]
            for k, (name, gdf) in enumerate(written):
                gdf.to_file(
                    tmp, layer=name, driver=VectorFormat.GPKG.driver, mode="a" if k else "w"
                )

    try:
        atomic_write(out, write, make_parents=False)
    except OSError as err:
        raise ExportError(f"{out}: cannot write the changes ({err})") from err
    logger.info("wrote changes to %s", out)
    return out


def plot_timelines(result: ChangeResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """One PNG chart per zone (and one for the whole area) of counts over time.

    Lines: objects per class and in total at each date; bars: arrivals (up) and departures
    (down) since the previous date. Files: ``all.png`` and ``zone_<zone_id>.png`` in
    ``out_dir`` (created if missing).

    Returns:
        The paths written.

    Raises:
        ExportError: a chart cannot be written.
    """
    from geoseg.viz import class_colour, timeline_chart

    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"{folder}: cannot create the plot folder ({err})") from err
    units: list[tuple[str, str, pd.DataFrame]] = [("all", "whole area", result.timeline)]
    if result.zones is not None:
        for zone_id, rows in result.zones.groupby("zone_id", sort=True):
            name = str(rows["zone"].iloc[0]) if "zone" in rows.columns else str(zone_id)
            units.append((f"zone_{zone_id}", f"zone {name}", pd.DataFrame(rows)))
    written = []
    for stem, caption, rows in units:
        rows = rows.set_index("date").reindex(list(result.dates))
        lines = [
            (c, class_colour(c, result.classes), rows[f"count_{c}"].to_numpy(dtype=float))
            for c in result.classes
        ]
        if len(result.classes) != 1:
            lines.append(("total", (40, 40, 40), rows["count_total"].to_numpy(dtype=float)))
        written.append(
            timeline_chart(
                folder / f"{stem}.png",
                dates=result.dates,
                lines=lines,
                arrived=rows["arrived_total"].to_numpy(dtype=float, na_value=np.nan),
                departed=rows["departed_total"].to_numpy(dtype=float, na_value=np.nan),
                title=f"{caption}: objects per date, arrivals and departures",
            )
        )
    return written


def change_map(
    result: ChangeResult,
    out_html: str | os.PathLike[str],
    *,
    scene: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    max_size: int = 2048,
) -> Path:
    """Write an offline HTML map with one layer per status (per pair of dates).

    Built with :func:`geoseg.viz.layered_map` (Leaflet inlined, no basemap). With more than two
    dates each pair of dates has its own three layers; only the last pair's are shown when the
    page opens. Popups give the status, class, dates, ids and IoU.

    Args:
        result: what :func:`compare` returned.
        out_html: the HTML file to write (atomically).
        scene: a raster shown under the polygons (e.g. the last date's scene), or several
            (e.g. each date's; one layer each).
        max_size: longest side of the scene image in pixels.

    Raises:
        ExportError: the ``maps`` extra is missing, or the file cannot be written.
    """
    from geoseg.viz import MapLayer, counts_table_html, layered_map

    fields: tuple[tuple[str, str, int | None], ...] = (
        ("status", "status", None),
        ("class", "class", None),
        ("date_from", "from", None),
        ("date_to", "to", None),
        ("id_from", "id then", None),
        ("id_to", "id now", None),
        ("track_id", "track", None),
        ("iou", "IoU", 2),
        ("distance_m", "moved (m)", 2),
    )
    objects = result.objects.copy()
    for col in ("id_from", "id_to"):
        objects[col] = objects[col].astype(object).where(objects[col].notna(), None)
    pairs = list(zip(result.dates[:-1], result.dates[1:], strict=True))
    layers = []
    for k, (d0, d1) in enumerate(pairs):
        pair = objects[(objects["date_from"] == d0) & (objects["date_to"] == d1)]
        for status in ChangeStatus:
            sub = pair[pair["status"] == status.value]
            suffix = f" {d0} → {d1}" if len(pairs) > 1 else ""
            layers.append(
                MapLayer(
                    f"{status.value}{suffix} ({len(sub)})",
                    sub,
                    STATUS_COLOURS[status],
                    fields=fields,
                    show=k == len(pairs) - 1,
                )
            )
    last = objects[objects["date_to"] == result.dates[-1]]
    rows = [
        (s.value, STATUS_COLOURS[s], int((last["status"] == s.value).sum())) for s in ChangeStatus
    ]
    title = f"changes {result.dates[-2]} → {result.dates[-1]}"
    return layered_map(
        layers,
        out_html=out_html,
        scene=scene,
        max_size=max_size,
        title=title,
        table_html=counts_table_html(rows, title, header=("status", "objects")),
    )


def format_changes(result: ChangeResult, *, max_rows: int = 30) -> str:
    """A plain-text summary: the shift and status counts per pair of dates, busiest zones."""
    lines = [f"dates ({result.date_source}): {', '.join(result.dates)}"]
    counts = result.status_counts()
    for s in result.shifts:
        lines.append("")
        lines.append(
            f"{s.date_from} -> {s.date_to}: shift {s.dx_m:+.2f} m E, {s.dy_m:+.2f} m N "
            f"({s.pairs} candidate pairs), {s.matched} matched"
        )
        pair = counts[(counts["date_from"] == s.date_from) & (counts["date_to"] == s.date_to)]
        header = ["class", *(st.value for st in ChangeStatus)]
        rows = [
            [str(r["class"]), *(str(int(r[st.value])) for st in ChangeStatus)]
            for _, r in pair.iterrows()
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    if result.zones is not None:
        z = result.zones[result.zones["date"] == result.dates[-1]]
        z = z.sort_values("count_total", ascending=False).head(max_rows)
        lines.append("")
        lines.append(f"zones at {result.dates[-1]}: count (arrived, departed, change)")
        for _, r in z.iterrows():
            lines.append(
                f"  zone {r.get('zone', r['zone_id'])}: {r['count_total']} "
                f"(+{r['arrived_total']}, -{r['departed_total']}, {r['change_total']:+d})"
            )
    if result.grid is not None:
        lines.append("")
        lines.append(
            f"grid {result.grid_m:g} m: {result.grid['cell_id'].nunique()} cells with objects"
        )
    return "\n".join(lines)
