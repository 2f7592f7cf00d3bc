"""CSV annotations: boxes or centres with a class per line; faults name the line."""

from __future__ import annotations

import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import csv_table


def test_reads_boxes_and_centres(tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("Image,Class,x1,y1,x2,y2\na.tiff,Mitose,1,2,11,12\n\nb.tiff,Nonmitosis,5,5,6,6\na.tiff,odd cell,0,0,1,1\n")
    images = csv_table.read(boxes)
    assert [i.name for i in images] == ["a.tiff", "b.tiff"]
    assert images[0].labels == ["mitotic figure", "odd cell"] and images[1].labels == ["hard negative"]
    assert images[0].boxes.tolist() == [[1, 2, 11, 12], [0, 0, 1, 1]]
    centres = tmp_path / "centres.csv"
    centres.write_text("slide,label,x,y,w,h\ns.svs,mitotic figure,100,100,20,10\n")
    assert csv_table.read(centres)[0].boxes.tolist() == [[90, 95, 110, 105]]
    points = tmp_path / "points.csv"
    points.write_text("filename,category,x,y\ns.svs,mitotic figure,100,100\n")
    assert csv_table.read(points, point_box_px=10)[0].boxes.tolist() == [[95, 95, 105, 105]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("image,x,y\n", "class column"),
        ("image,label,a,b\n", "x1, y1, x2, y2 or x, y"),
        ("image,label,x,y\na,mitosis,1,2\nb,mitosis,one,2\n", "line 3: x is 'one'"),
        ("image,label,x,y\na,mitosis,1\n", "line 2 has 3 fields"),
        ("image,label,x1,y1,x2,y2\na,mitosis,5,5,1,1\n", "line 2: the box"),
        ("image,label,x,y\n,mitosis,1,2\n", "line 2 has an empty image"),
        ("image,label,x,y\na,mitosis,inf,2\n", "line 2: x is not finite"),
    ],
)
def test_faults_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AnnotationFormatError, match=message):
        csv_table.read(path)
