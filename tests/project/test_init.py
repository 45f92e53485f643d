"""`hybridllm init`: bad input, the templates it writes, config paths, and what a rerun reuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services import cli
from services.core.errors import ConfigError
from services.core.settings import EXAMPLE_ORG_NAME, PromptSettings, load_settings
from services.llm.prompts import PACKAGED_TEMPLATES, PromptLibrary
from services.project import prepare, router_hook
from services.project.fingerprint import fingerprint
from services.project.layout import ProjectLayout, is_project_config
from training.project_router import DATA_KEY, PROJECT_ROUTER

pytestmark = pytest.mark.unit

ORG = "Acme Corp"


def _init(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `hybridllm init ...`; (exit code, stdout, stderr)."""
    code = 0
    try:
        cli.main(["init", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(code: int, err: str) -> str:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.usefixtures("with_router_hook")
def test_init_writes_a_project_that_names_the_org_and_never_the_example(
    tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "acme"
    code, out, err = _init(capsys, str(project), "--corpus", str(tiny_corpus), "--org", ORG)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["corpus_files"] == len(list(tiny_corpus.rglob("*.*")))

    refusal = PromptLibrary(project / "templates").render_block("refusal", "answer")
    assert f"{ORG}'s documents" in refusal
    for path in project.rglob("*"):
        if path.is_file():
            assert EXAMPLE_ORG_NAME.split()[0].lower() not in path.read_text("utf-8").lower(), path
    labels = {json.loads(line)["label"] for line in (project / "router" / "train.jsonl").open()}
    assert labels == {"knowledge", "direct", "out_of_scope"}
    assert (project / "router" / "source" / "knowledge.txt").read_text().startswith("#")
    assert {"README.md", "config.yaml"} <= {p.name for p in project.iterdir()}

    settings = load_settings(project / "config.yaml")
    assert settings.project.org_name == ORG and settings.project.corpus == tiny_corpus.resolve()
    assert settings.rag.index_dir == project / "var" / "index"
    assert settings.router.model_dir == project / "var" / "router"
    assert settings.prompts.templates_dir == project / "templates"
    assert settings.data_dir == project / "var"


def test_packaged_templates_and_default_system_prompt_name_no_organisation() -> None:
    for template in PACKAGED_TEMPLATES.glob("*.j2"):
        assert EXAMPLE_ORG_NAME not in template.read_text("utf-8"), template
    assert EXAMPLE_ORG_NAME not in PromptSettings().system_prompt
    # The example keeps its wording: the organisation comes from the project settings' defaults.
    library = PromptLibrary()
    assert EXAMPLE_ORG_NAME in library.render_block("refusal", "answer")
    system = library.render_block("direct", "system", system_prompt=PromptSettings().system_prompt)
    assert system.startswith(f"You are the assistant of {EXAMPLE_ORG_NAME}'s internal help desk.")
    other = PromptLibrary(org={"org_name": ORG, "org_description": "Acme's travel rules"})
    assert "Acme's travel rules" in other.render_block("refusal", "answer")


@pytest.mark.usefixtures("with_router_hook")
@pytest.mark.parametrize(
    ("make_corpus", "extra", "needle"),
    [
        (lambda root: None, (), "is empty"),
        (lambda root: (root / "logo.png").write_bytes(b"\x89PNG"), (), "no markdown, HTML, PDF"),
        (lambda root: (root / "broken.md").write_bytes(b"\x00\x01binary"), (), "broken.md"),
        (lambda root: (root / "a.md").write_text("# A\n"), ("--org", ""), "--org is required"),
    ],
    ids=["empty", "unsupported", "unreadable", "no-org"],
)
def test_bad_input_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_corpus: object,
    extra: tuple[str, ...],
    needle: str,
) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    make_corpus(corpus)  # type: ignore[operator]
    args = ["--org", ORG] if not extra else list(extra)
    code, _, err = _init(capsys, str(tmp_path / "p"), "--corpus", str(corpus), *args)
    assert needle in _one_error_line(code, err)
    assert not (tmp_path / "p").exists()


@pytest.mark.usefixtures("with_router_hook")
def test_missing_org_or_corpus_and_an_existing_folder_are_refused(
    tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "p"
    assert "--org" in _one_error_line(*_init(capsys, str(project), "--corpus", str(tiny_corpus))[::2])
    assert "--corpus" in _one_error_line(*_init(capsys, str(project), "--org", ORG)[::2])
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    line = _one_error_line(*_init(capsys, str(project), "--corpus", str(tiny_corpus), "--org", ORG)[::2])
    assert str(project) in line and "--force" in line
    code, _, err = _init(capsys, str(project), "--corpus", str(tiny_corpus), "--org", ORG, "--force")
    assert code == 0, err


def test_init_without_the_training_extra_says_what_to_install(
    tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_hook, "load_project_router", lambda: None)
    code, _, err = _init(capsys, str(tmp_path / "p"), "--corpus", str(tiny_corpus), "--org", ORG)
    assert router_hook.TRAIN_HINT in _one_error_line(code, err)


def test_project_config_paths_are_relative_to_its_folder_and_other_configs_keep_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "moved" / "acme"
    folder.mkdir(parents=True)
    paths = {"rag": {"index_dir": "var/index", "corpus_dirs": ["docs", "/abs/docs"]}, "data_dir": "var"}
    (folder / "project.yaml").write_text(yaml.safe_dump({"project": {"corpus": "docs"}, **paths}))
    (folder / "plain.yaml").write_text(yaml.safe_dump(paths))
    monkeypatch.chdir(tmp_path)

    project = load_settings(folder / "project.yaml")
    assert project.rag.index_dir == folder / "var" / "index"
    assert project.rag.corpus_dirs == [folder / "docs", Path("/abs/docs")]
    assert project.project.corpus == folder / "docs" and project.data_dir == folder / "var"
    assert is_project_config(folder / "project.yaml") and not is_project_config(folder / "plain.yaml")

    plain = load_settings(folder / "plain.yaml")
    assert plain.rag.index_dir == Path("var/index") and plain.data_dir == Path("var")
    monkeypatch.setenv("HYBRID_ROUTER__MODEL_DIR", "elsewhere/router")  # the environment is not the file
    assert load_settings(folder / "project.yaml").router.model_dir == Path("elsewhere/router")


def test_fingerprint_follows_content_and_settings(tmp_path: Path, tiny_corpus: Path) -> None:
    first = fingerprint([tiny_corpus], {"chunk": 256})
    assert fingerprint([tiny_corpus], {"chunk": 256}) == first
    assert fingerprint([tiny_corpus], {"chunk": 128}) != first
    (tiny_corpus / "travel.md").write_text("# Travel policy\n\nNo more per diem.\n")
    assert fingerprint([tiny_corpus], {"chunk": 256}) != first


def test_router_data_and_router_are_rebuilt_only_when_their_inputs_change(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    from services.core.settings import ProjectSettings

    layout = ProjectLayout(tmp_path / "p")
    project = ProjectSettings(corpus=tiny_corpus, org_name=ORG, org_description="Acme")
    PROJECT_ROUTER.write_sources(layout)
    assert PROJECT_ROUTER.build_data(layout, project) is True
    assert PROJECT_ROUTER.build_data(layout, project) is False
    with (layout.router_source / "knowledge.txt").open("a") as knowledge:
        knowledge.write("how do I expense a taxi to the airport\n")
    assert PROJECT_ROUTER.build_data(layout, project) is True
    train = (layout.router_data / "train.jsonl").read_text() + (layout.router_data / "val.jsonl").read_text()
    train += (layout.router_data / "test.jsonl").read_text()
    assert "expense a taxi to the airport" in train

    # A router whose metrics record these data is reused without training.
    model = tmp_path / "router"
    model.mkdir()
    (model / "labels.json").write_text("[]")
    (model / "metrics.json").write_text(json.dumps({DATA_KEY: "old"}))
    router_data = [layout.router_data / "train.jsonl", layout.router_data / "val.jsonl"]
    wanted = fingerprint(router_data, {"recipe": None, "max_steps": None})
    (model / "metrics.json").write_text(json.dumps({DATA_KEY: wanted}))
    assert PROJECT_ROUTER.train(layout, project, model, progress=False) is False

    # A router some other way trained (no project fingerprint) is never retrained over.
    (model / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(ConfigError, match="not trained for this project"):
        PROJECT_ROUTER.train(layout, project, model, progress=False)


def test_serving_a_project_without_training_says_what_to_install(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_hook, "load_project_router", lambda: None)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"project": {"corpus": str(tiny_corpus)}, "router": {"model_dir": "r"}}))
    with pytest.raises(ConfigError, match="hybridllm\\[train\\]"):
        prepare.prepare_router(ProjectLayout.of_config(config), load_settings(config), progress=False)


def test_the_index_is_reused_only_when_its_manifest_records_the_same_corpus(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    from services.rag.index_store import FORMAT_VERSION, VERSIONS_DIR, set_current

    settings = load_settings(rag={"index_dir": str(tmp_path / "index")}, project={"corpus": str(tiny_corpus)})
    index_dir = tmp_path / "index"
    assert prepare.indexed_fingerprint(index_dir) is None
    version = index_dir / VERSIONS_DIR / "v1"
    version.mkdir(parents=True)
    wanted = prepare.index_fingerprint(settings)
    manifest = {"format_version": FORMAT_VERSION, prepare.INDEX_FINGERPRINT_KEY: wanted}
    (version / "manifest.json").write_text(json.dumps(manifest))
    set_current(index_dir, "v1")
    assert prepare.prepare_index(settings, progress=False) == "reused"
    (tiny_corpus / "new.md").write_text("# New page\n")
    assert prepare.index_fingerprint(settings) != wanted


def test_router_questions_come_from_html_headings_too(tmp_path: Path) -> None:
    from services.core.settings import ProjectSettings

    corpus = tmp_path / "site"
    corpus.mkdir()
    (corpus / "expenses.html").write_text(
        "<html><body><h1>Expense reports</h1><h2>Submitting receipts</h2><p>Within 30 days.</p>"
        "<h2>Mileage allowance</h2><p>0.30 a km.</p></body></html>"
    )
    layout = ProjectLayout(tmp_path / "p")
    PROJECT_ROUTER.write_sources(layout)
    PROJECT_ROUTER.build_data(layout, ProjectSettings(corpus=corpus, org_name=ORG, org_description="Acme"))
    rows = [
        json.loads(line)
        for split in ("train", "val", "test")
        for line in (layout.router_data / f"{split}.jsonl").open()
    ]
    knowledge = " ".join(row["text"].lower() for row in rows if row["label"] == "knowledge")
    assert "submitting receipts" in knowledge and "mileage allowance" in knowledge


def test_the_packaged_workplace_questions_are_knowledge_examples_the_user_can_drop(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    from services.core.settings import ProjectSettings

    layout = ProjectLayout(tmp_path / "p")
    PROJECT_ROUTER.write_sources(layout)
    workplace = layout.router_source / "knowledge.workplace.txt"
    packaged = [line for line in workplace.read_text().splitlines() if line and not line.startswith("#")]
    assert len(packaged) > 100
    project = ProjectSettings(corpus=tiny_corpus, org_name=ORG, org_description="Acme")

    def knowledge_rows() -> set[str]:
        return {
            row["text"]
            for split in ("train", "val", "test")
            for row in map(json.loads, (layout.router_data / f"{split}.jsonl").open())
            if row["label"] == "knowledge"
        }

    PROJECT_ROUTER.build_data(layout, project)
    assert set(packaged) <= knowledge_rows()
    workplace.unlink()
    assert PROJECT_ROUTER.build_data(layout, project) is True
    assert not set(packaged) & knowledge_rows()


def test_documents_without_headings_and_no_own_questions_are_one_clear_error(tmp_path: Path) -> None:
    from services.core.settings import ProjectSettings

    corpus = tmp_path / "notes"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Plain text with no headings at all.\n")
    layout = ProjectLayout(tmp_path / "p")
    PROJECT_ROUTER.write_sources(layout)
    with pytest.raises(ConfigError, match="knowledge.txt"):
        PROJECT_ROUTER.build_data(layout, ProjectSettings(corpus=corpus, org_name=ORG, org_description="x"))


def test_a_system_prompt_is_rendered_with_the_org_and_the_same_text_once() -> None:
    from services.llm.prompts import PromptLibrary

    library = PromptLibrary(org={"org_name": "Acme", "org_description": "Acme's handbook"})
    text = "You help {{ org_name }}."
    assert library.render_text(text) == "You help Acme."
    assert library.render_text(text) is library.render_text(text)
    with pytest.raises(ConfigError):
        library.render_text("{{ unknown_variable }}")
