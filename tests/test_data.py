from pathlib import Path

import pytest
from conftest import answer, question, write_json

from mcub.data import DataPaths, load_task, parse_options, resolve_media_path
from mcub.errors import DataError
from mcub.tasks import load_registry

TASKS = load_registry().tasks
MCUB_PROMPT = (
    "image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n"
    "Which of these attributes is common among the inputs?\nA. A dog\nB. Street scenes\nC. Rain\nD. Music"
)
MCUB_MEDIA = {
    "vision": ["data/img/1.jpg"],
    "audio": ["data/aud/1.wav"],
    "video": ["data/vid/1.mp4"],
    "point": ["data/PointCloud/8192_npy/obj_8192.npy"],
}


def load(name: str, root: Path, **kwargs) -> object:
    return load_task(TASKS[name], DataPaths(data_root=root, download=False, **kwargs))


def test_mcub_format_with_the_shared_answer_file(data_root):
    write_json(data_root / "test/MCUB-4.json", [question(7, MCUB_PROMPT, **MCUB_MEDIA)])
    write_json(data_root / "test/MCUB-answer.json", [answer("7", "A"), answer("other-subset", "B")])
    data = load("mcub-4", data_root)
    assert data.problems == []
    [sample] = data.samples
    assert sample.id == "7" and sample.answer == "A" and sample.task == "mcub-4"
    assert sample.options == {"A": "A dog", "B": "Street scenes", "C": "Rain", "D": "Music"}
    assert [modality for modality, _ in sample.media] == ["image", "audio", "video", "point"]
    assert sample.media[3][1] == str(data_root.parent / "data/PointCloud/8192_npy/obj_8192.npy")
    assert len(data.question_sha256) == 64 and data.question_sha256 != data.answer_sha256


def test_avqa_format_with_int_ids_and_repeated_placeholders(data_root):
    prompt = "<video>\n<image>\n<audio>\nWhat makes the sound? (A) a car (B) a dog (C) a cat (D) a bell"
    media = {"video": ["v.mp4"], "vision": ["f.jpg"], "audio": ["a.wav"]}
    write_json(data_root / "test/avqa-test_mm_video+image+audio.json", [question(12, prompt, **media)])
    write_json(data_root / "test/avqa-test_mm_answer.json", [answer(12, "C")])
    [sample] = load("avqa-video+image+audio", data_root).samples
    assert sample.id == "12" and sample.answer == "C"
    assert sample.options == {"A": "a car", "B": "a dog", "C": "a cat", "D": "a bell"}
    assert [m for m, _ in sample.media] == ["video", "image", "audio"]


def test_music_avqa_open_answers_carry_the_question_type(data_root):
    prompt = "<audio>\nHow many instruments are sounding in the video?"
    write_json(
        data_root / "test/music-avqa-test_mm_audio.json",
        [question(5001, prompt, audio=["a.wav"]) | {"type": '["Audio", "Counting"]'}],
    )
    write_json(data_root / "test/music-avqa-test_mm_answer.json", [answer(5001, "two")])
    [sample] = load("music-avqa-audio", data_root).samples
    assert sample.answer == "two" and sample.options == {}
    assert sample.meta["type"] == '["Audio", "Counting"]' and sample.meta["question_index"] == 0


def test_modelnet40_gold_from_label_or_label_name(data_root):
    prompt = "<point>\nWhat is this?"
    write_json(
        data_root / "test/ModelNet40-test.json",
        [question(i, prompt, point=[f"data/ModelNet40/{i}_8192.npy"]) for i in range(3)],
    )
    write_json(
        data_root / "test/ModelNet40-answer.json",
        [{"id": 0, "label": 8, "label_name": "chair"}, {"id": 1, "label_name": "flower_pot"}, answer(2, "Night Stand")],
    )
    data = load("modelnet40", data_root)
    assert [s.answer for s in data.samples] == ["8", "15", "23"]
    assert data.samples[0].options["8"] == "chair" and len(data.samples[0].options) == 40


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Q?\nA. red\nB. blue\nC. green", {"A": "red", "B": "blue", "C": "green"}),
        ("Q?\n(A) red\n(B) blue", {"A": "red", "B": "blue"}),
        ("Q?\n A) red \n B) blue", {"A": "red", "B": "blue"}),
        ("Q? A. red B. blue C. green D. grey", {"A": "red", "B": "blue", "C": "green", "D": "grey"}),
        ("Plan B. is fine\nA. red\nB. blue\nD. grey", {"A": "red", "B": "blue"}),
        ("No options here.", {}),
    ],
)
def test_parse_options(prompt, expected):
    assert parse_options(prompt) == expected


def test_media_path_resolution(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.wav").write_bytes(b"1")
    (tmp_path / "data" / "y.wav").write_bytes(b"1")
    assert resolve_media_path("data/y.wav", root, None) == tmp_path / "data/y.wav"
    assert resolve_media_path("sub/x.wav", root, None) == root / "sub/x.wav"
    assert resolve_media_path("missing.wav", root, None) == tmp_path / "missing.wav"
    assert resolve_media_path("/abs/z.wav", root, None) == Path("/abs/z.wav")
    assert resolve_media_path("sub/x.wav", root, tmp_path / "m") == tmp_path / "m/sub/x.wav"
    assert resolve_media_path("/abs/z.wav", root, tmp_path / "m") == Path("/abs/z.wav")


def test_malformed_json_names_file_line_and_column(data_root):
    (data_root / "test/MCUB-4.json").write_text('[\n  {"id": 1,\n   "conversations": [}\n]')
    write_json(data_root / "test/MCUB-answer.json", [])
    with pytest.raises(DataError, match=r"MCUB-4.json:3:\d+: malformed JSON"):
        load("mcub-4", data_root)


def _problems(data_root, questions, answers, task="mcub-4"):
    write_json(data_root / "test/MCUB-4.json", questions)
    write_json(data_root / "test/MCUB-answer.json", answers)
    return [str(p) for p in load(task, data_root).problems]


def test_question_without_answer(data_root):
    [problem] = _problems(data_root, [question("q1", MCUB_PROMPT, **MCUB_MEDIA)], [answer("q2", "A")])
    assert "MCUB-4.json [sample q1]: no answer for this id" in problem


def test_duplicate_ids_including_int_and_string(data_root):
    records = [question(3, MCUB_PROMPT, **MCUB_MEDIA), question("3", MCUB_PROMPT, **MCUB_MEDIA)]
    [problem] = _problems(data_root, records, [answer(3, "A")])
    assert "[sample 3]: id appears 2 times" in problem


def test_placeholder_count_differs_from_media_count(data_root):
    media = {**MCUB_MEDIA, "audio": ["a.wav", "b.wav"]}
    [problem] = _problems(data_root, [question("p", MCUB_PROMPT, **media)], [answer("p", "A")])
    assert "[sample p]: 1 <audio> placeholder(s) but 2 audio file(s)" in problem


def test_unknown_modality_key(data_root):
    media = {**MCUB_MEDIA, "depth": ["d.png"]}
    [problem] = _problems(data_root, [question("u", MCUB_PROMPT, **media)], [answer("u", "A")])
    assert "[sample u]: unknown modality key 'depth'" in problem


def test_modality_the_task_does_not_declare(data_root):
    write_json(data_root / "test/avqa-test_mm_audio.json", [question(1, "<image>\nQ?\nA. x\nB. y", vision=["i.jpg"])])
    write_json(data_root / "test/avqa-test_mm_answer.json", [answer(1, "A")])
    [problem] = [str(p) for p in load("avqa-audio", data_root).problems]
    assert "[sample 1]: has image input, which task avqa-audio does not declare" in problem


def test_gold_letter_not_among_options_and_missing_options(data_root):
    no_options = MCUB_PROMPT.split("\nA.")[0]
    problems = _problems(
        data_root,
        [question("g", MCUB_PROMPT, **MCUB_MEDIA), question("n", no_options, **MCUB_MEDIA)],
        [answer("g", "E"), answer("n", "A")],
    )
    assert any("[sample g]: gold answer 'E' is not one of the option letters A, B, C, D" in p for p in problems)
    assert any("[sample n]: no lettered options" in p for p in problems)


def test_answer_leaking_into_the_question_file(data_root):
    leaking = question("l", MCUB_PROMPT, **MCUB_MEDIA)
    leaking["conversations"][1]["value"] = "A"
    [problem] = _problems(data_root, [leaking], [answer("l", "A")])
    assert "[sample l]: the question record holds an assistant answer" in problem


def test_missing_question_file_offline_names_file_and_flag(data_root):
    with pytest.raises(DataError, match=r"MCUB-4.json: not found \(downloads are off\).*--data-root"):
        load("mcub-4", data_root)


def test_failed_hub_fetch_names_file_source_and_flag(data_root, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DataError, match=r"fetching test/MCUB-4.json from the hub dataset Adu2021/ModelCompose failed"):
        load_task(TASKS["mcub-4"], DataPaths(data_root=data_root))


def test_hub_fetch_writes_into_the_data_root(data_root, monkeypatch):
    import huggingface_hub

    calls = []

    def fetch(repo_id, filename, repo_type, local_dir):
        calls.append((repo_id, filename, repo_type))
        target = Path(local_dir) / filename
        write_json(target, [question(1, MCUB_PROMPT, **MCUB_MEDIA)] if "MCUB-4" in filename else [answer(1, "B")])
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fetch)
    data = load_task(TASKS["mcub-4"], DataPaths(data_root=data_root))
    assert calls == [
        ("Adu2021/ModelCompose", "test/MCUB-4.json", "dataset"),
        ("Adu2021/ModelCompose", "test/MCUB-answer.json", "dataset"),
    ]
    assert data.samples[0].answer == "B" and (data_root / "test/MCUB-4.json").is_file()


def test_modelnet40_is_local_only(data_root):
    with pytest.raises(DataError, match="has no hub source"):
        load_task(TASKS["modelnet40"], DataPaths(data_root=data_root))
