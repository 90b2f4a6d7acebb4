"""Prompt sources in the formats users have, read into one deduplicated list."""

import json

import pytest

from litetext.calibration.data import read_prompts
from litetext.errors import LitetextError


def write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_formats(tmp_path):
    coco = write(tmp_path / "coco.json", {"categories": [{"id": 1, "name": "traffic_light", "synonyms": ["stoplight"]},
                                                         {"id": 2, "name": "person"}], "images": []})
    refcoco = write(tmp_path / "refs.json", [{"ref_id": 0, "sentences": [{"raw": "The man on the LEFT", "sent": "the man on the left"},
                                                                         {"sent": "left guy"}]}])
    saco = write(tmp_path / "veval.json", {"video_np_pairs": [{"noun_phrase": "red kite"}],
                                           "images": [{"id": 3, "text_input": "a yellow  school bus"}]})
    text = write(tmp_path / "a.txt", "person\n\n  dog  \n")
    assert read_prompts([coco, refcoco, saco, text]) == [
        "traffic light", "stoplight", "person", "The man on the LEFT", "left guy", "red kite",
        "a yellow school bus", "dog"]


def test_folder_reads_txt_and_json_in_order(tmp_path):
    write(tmp_path / "b.txt", "cat\ndog\n")
    write(tmp_path / "a.json", {"categories": [{"name": "dog"}, {"name": "zebra"}]})
    write(tmp_path / "notes.md", "not prompts")
    assert read_prompts([tmp_path]) == ["dog", "zebra", "cat"]


@pytest.mark.parametrize("name, content, message", [
    ("bad.json", "{not json", "not valid JSON"),
    ("other.json", {"licenses": []}, "no prompts litetext recognises"),
    ("empty.txt", "\n  \n", "hold no prompts"),
])
def test_bad_files_fail_clearly(tmp_path, name, content, message):
    with pytest.raises(LitetextError, match=message):
        read_prompts([write(tmp_path / name, content)])


def test_non_utf8_and_missing(tmp_path):
    (tmp_path / "latin.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(LitetextError, match="not UTF-8"):
        read_prompts([tmp_path / "latin.txt"])
    with pytest.raises(LitetextError, match="does not exist"):
        read_prompts([tmp_path / "missing.txt"])
    (tmp_path / "d").mkdir()
    with pytest.raises(LitetextError, match="no prompt files"):
        read_prompts([tmp_path / "d"])


def test_shared_prompt_folders(shared):
    calib = read_prompts([shared / "prompts" / "calib"])
    assert len(calib) > 60_000 and len(set(calib)) == len(calib)
