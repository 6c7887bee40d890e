"""What changed between dates: objects matched across results of the same area.

Input: two or more results of the same place at different dates, each a result file, a
folder of them (a ``geoseg batch`` output folder: all its scenes are one date) or a
GeoDataFrame, with the columns :func:`geoseg.count.read_results` reads (``geometry``,
``class``, optionally ``score`` and ``scene``).

**Dates.** In this order: the ``dates`` argument; else a date column of the results
(``acquired``, ``acquisition_date``, ``datetime`` or ``date``: one date per input); else a
date in the ``scene`` names (``20230415``, ``2023-04-15``, ``2023_04_15``), the same for all
the input's scenes; else a date in the file or folder name (for a file, else in the name of
the folder holding it). Inputs are then sorted by date.
When an input has no date, the inputs stay in the order given and are labelled by their
names (``date_source == "order"``).

**Matching**, for each pair of consecutive dates, in one metric CRS (the data's own when all
inputs share a CRS in metres, else the local UTM zone; see
:func:`geoseg.count.common_metric_crs`):

1. *Georeferencing shift.* Two acquisitions are often offset by a few pixels. The shift is
   estimated once per pair of dates: every same-class pair of objects whose centroids are at
   most ``max_shift_m`` apart votes for its displacement; the strongest few vote peaks are
   tried, and the one under which the earlier objects overlap the later ones most (sum over
   objects of the best IoU) wins; it is refined to the median displacement of the pairs it
   matches. With fewer than :data:`MIN_SHIFT_PAIRS` such pairs the shift is zero.
2. *Candidates.* After removing the shift, two objects of the same class are candidates
   when their IoU is at least ``min_iou`` or when their centroids are closer than half the
   smaller object's width (short side of its minimum rotated rectangle; this keeps small
   objects, whose IoU a one-pixel outline difference halves, while two objects side by side
   are never closer than one width).
3. *One-to-one.* The Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`)
   maximises the summed score ``max(IoU, 1 - distance / width)`` over the candidates of
   each connected group.

An earlier object with a partner is ``persisted``; without one ``departed``; a later object
without a partner ``arrived``. An object that moved further than its tolerance (a boat that
left its berth for another one) is a departure at its old place and an arrival at the new one.

**Ids**: the value of ``id_column`` when given, else the object's row number in its file
(0-based; GeoPackages written by geoseg have ``fid`` = row + 1).

**Zones and cells**: the zones of an AOI and the grid cells of ``geoseg count``
(:func:`geoseg.count.zone_membership`, :func:`geoseg.count.grid_membership`: an object
belongs to the zone or cell holding its centroid). For each zone or cell and date: objects per
class, arrivals (counted at the later date, where the arriving object is) and departures
(counted at the later date, where the departed object was at the earlier one) and the change
of the count since the previous date.
"""

from __future__ import annotations

from geoseg.compare.changes import compare
from geoseg.compare.dates import DATE_COLUMNS, date_in_name
from geoseg.compare.matching import MIN_SHIFT_PAIRS, match_objects
from geoseg.compare.output import change_map, format_changes, plot_timelines, write_changes
from geoseg.compare.result import (
    STATUS_COLOURS,
    ChangeFormat,
    ChangeResult,
    ChangeStatus,
    PairShift,
)

__all__ = [
    "DATE_COLUMNS",
    "MIN_SHIFT_PAIRS",
    "STATUS_COLOURS",
    "ChangeFormat",
    "ChangeResult",
    "ChangeStatus",
    "PairShift",
    "change_map",
    "compare",
    "date_in_name",
    "format_changes",
    "match_objects",
    "plot_timelines",
    "write_changes",
]
