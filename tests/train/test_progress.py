"""progress.jsonl: appended by the run, tailed by the panel without ever reading half a line."""

from __future__ import annotations

from midog_viewer.train.progress import PROGRESS_FILE, ProgressReader, ProgressWriter, read_progress


def test_reader_returns_only_new_complete_lines(tmp_path):
    writer = ProgressWriter(tmp_path)
    reader = ProgressReader(tmp_path)
    assert reader.new_events() == []
    writer.write("start", step=0)
    writer.write("step", step=1, loss=2.5)
    assert [e["event"] for e in reader.new_events()] == ["start", "step"]
    with (tmp_path / PROGRESS_FILE).open("a") as fh:
        fh.write('{"event": "step", "st')  # a line still being written
    assert reader.new_events() == []
    with (tmp_path / PROGRESS_FILE).open("a") as fh:
        fh.write('ep": 2}\n')
    (event,) = reader.new_events()
    assert event == {"event": "step", "step": 2}
    assert [e.get("step") for e in read_progress(tmp_path)] == [0, 1, 2]


def test_writer_appends_so_a_resumed_run_continues_the_file(tmp_path):
    ProgressWriter(tmp_path).write("cancelled", step=3)
    ProgressWriter(tmp_path).write("start", step=3)
    events = read_progress(tmp_path)
    assert [e["event"] for e in events] == ["cancelled", "start"]
    assert all(isinstance(e["time"], float) for e in events)
