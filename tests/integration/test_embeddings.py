"""Embeddings: FiftyOne's four routes and the labelling run's ``embeddings_field`` give the same vectors.

A real dataset of PNG files (lossless, so FiftyOne's patch loader, which
decodes with OpenCV, sees the pixels the library sees) and the tiny checkpoint.
"""

from __future__ import annotations

import json

import fiftyone as fo
import fiftyone.brain as fob
import fiftyone.core.labels as fol
import numpy as np
import pytest
from fiftyone.utils.patches import extract_patch
from helpers import force, write_image
from helpers.operators import form, inputs_of, run_from_app
from PIL import Image

from fiftyone_florence2 import load_model
from fiftyone_florence2.cli import main
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.records import list_runs

TIGHT = {"rtol": 0.0, "atol": 1e-6}
PART = [0.1, 0.2, 0.5, 0.5]


@pytest.fixture(scope="module")
def model(tiny_checkpoint, tokenizer):
    return load_model("caption", model=str(tiny_checkpoint), num_beams=1, generate_kwargs=force(tokenizer, "a car"))


@pytest.fixture
def pngs(tmp_path):
    """Five PNG images; each but the last has a whole-image box and a part box in ``ground_truth``."""
    dataset = fo.Dataset()
    for i in range(5):
        path = write_image(tmp_path / f"img_{i}.png", size=(96, 64), seed=i)
        boxes = [fol.Detection(label="all", bounding_box=[0, 0, 1, 1]), fol.Detection(label="part", bounding_box=PART)]
        dataset.add_sample(fo.Sample(filepath=path, ground_truth=fol.Detections(detections=boxes if i < 4 else [])))
    yield dataset
    dataset.delete()


def embeddings_of(dataset, model, **kwargs) -> np.ndarray:
    return np.stack(dataset.compute_embeddings(model, **kwargs))


def test_the_vectors_are_the_mean_pooled_projected_features_l2_normalised(pngs, model):
    import torch

    runner = model.runner
    pixels = [runner.preprocess(Image.open(path).convert("RGB")) for path in pngs.values("filepath")]
    features = runner.image_features(pixels)  # what labelling computes: (images, image tokens, dim)
    assert tuple(features.shape) == (5, runner.processor.num_image_tokens, runner.embedding_dim)
    expected = torch.nn.functional.normalize(features.float().mean(dim=1), dim=-1).numpy()
    vectors = embeddings_of(pngs, model, batch_size=2)
    assert vectors.dtype == np.float32 and vectors.shape == (5, model.embedding_dim)
    assert np.allclose(vectors, expected, **TIGHT)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_embedding_dim_is_the_checkpoints_vision_projection(model, tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert model.embedding_dim == model.runner.embedding_dim == config["vision_config"]["projection_dim"] == 32
    assert model.has_embeddings and not model.can_embed_prompts


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_compute_embeddings_in_memory_in_a_field_and_one_by_one_agree(pngs, model, batch_size):
    in_memory = embeddings_of(pngs, model, batch_size=batch_size)
    pngs.compute_embeddings(model, embeddings_field="emb", batch_size=batch_size)
    assert pngs.get_field("emb").__class__.__name__ == "VectorField"
    assert np.allclose(np.stack(pngs.values("emb")), in_memory, **TIGHT)
    direct = np.stack([model.embed(Image.open(path)) for path in pngs.values("filepath")])
    assert np.allclose(direct, in_memory, **TIGHT)
    assert np.allclose(model.get_embeddings()[0], direct[-1], **TIGHT)


def test_patch_embeddings_embed_each_box_as_an_image(pngs, model):
    whole = embeddings_of(pngs, model)
    patches = pngs.compute_patch_embeddings(model, "ground_truth", batch_size=2)
    ids, paths = pngs.values("id"), pngs.values("filepath")
    assert patches[ids[4]] is None  # no boxes: FiftyOne's handle_missing="skip"
    for i in range(4):
        assert patches[ids[i]].shape == (2, model.embedding_dim)
        assert np.allclose(patches[ids[i]][0], whole[i], **TIGHT)  # the whole-image box is the image
        part = extract_patch(np.asarray(Image.open(paths[i]).convert("RGB")), fol.Detection(bounding_box=PART))
        assert np.allclose(patches[ids[i]][1], model.embed(part), **TIGHT)
    pngs.compute_patch_embeddings(model, "ground_truth", embeddings_field="emb")
    stored = pngs.values("ground_truth.detections.emb")
    assert np.allclose(np.stack(stored[0]), patches[ids[0]], **TIGHT) and stored[4] == []


def test_similarity_index_answers_image_queries_and_says_text_is_not_supported(pngs, model):
    vectors = embeddings_of(pngs, model)
    index = fob.compute_similarity(pngs, model=model, brain_key="sim")
    indexed, ids, _ = index.get_embeddings()
    assert list(ids) == pngs.values("id") and np.allclose(indexed, vectors, **TIGHT)
    first = pngs.values("id")[2]
    assert pngs.sort_by_similarity(first, k=2, brain_key="sim").values("id")[0] == first
    assert pngs.sort_by_similarity(vectors[3], k=1, brain_key="sim").values("id") == [pngs.values("id")[3]]
    with pytest.raises(ValueError, match="does not support prompts"):
        pngs.sort_by_similarity("a red car", brain_key="sim")


def test_visualization_of_the_model_is_that_of_its_embeddings(pngs, model):
    vectors = embeddings_of(pngs, model)
    # UMAP (FiftyOne's default method) needs umap-learn, which this project does not depend on.
    points = fob.compute_visualization(pngs, model=model, method="pca", brain_key="viz").points
    assert points.shape == (5, 2)
    assert np.allclose(points, fob.compute_visualization(pngs, embeddings=vectors, method="pca").points, atol=1e-5)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_a_labelling_run_stores_the_same_vectors_with_no_extra_vision_pass(pngs, model, batch_size):
    expected = embeddings_of(pngs, model, batch_size=batch_size)
    images_before = model.runner.timings.images
    summary = label_samples(pngs, model, "cap", batch_size=batch_size, embeddings_field="emb")
    assert model.runner.timings.images - images_before == len(pngs)  # one vision pass per image
    assert (summary.labelled, summary.embedded, summary.failures) == (5, 5, {})
    assert pngs.count("cap") == 5
    assert np.allclose(np.stack(pngs.values("emb")), expected, **TIGHT)
    record = pngs.get_run_info(list_runs(pngs)[-1]).config
    results = pngs.load_run_results(summary.run_key, cache=False)
    assert (record.embeddings_field, results.embedded) == ("emb", 5)
    assert 'fob.compute_similarity(dataset, embeddings="emb", brain_key="emb_sim")' in "\n".join(
        summary.report({}, model.config.label_types)
    )
    index = fob.compute_similarity(pngs, embeddings="emb", brain_key="from_labelling")
    assert np.allclose(index.get_embeddings()[0], expected, **TIGHT)


def test_a_broken_image_gets_no_vector_and_a_reason(pngs, model, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    sample = fo.Sample(filepath=str(broken))
    pngs.add_sample(sample)
    summary = label_samples(pngs, model, "cap", batch_size=6, embeddings_field="emb")
    assert (summary.labelled, summary.embedded, list(summary.failures)) == (5, 5, [sample.id])
    assert "not an image file" in summary.failures[sample.id]
    assert pngs.values("emb")[-1] is None and all(v is not None for v in pngs.values("emb")[:5])
    # FiftyOne's compute_embeddings gives a failing batch no vectors; one image a batch keeps it to that image.
    vectors = pngs.compute_embeddings(model, batch_size=1)
    assert vectors[-1] is None and np.allclose(np.stack(vectors[:5]), np.stack(pngs.values("emb")[:5]), **TIGHT)
    assert "not an image file" in model.failures[sample.id]
    with pytest.raises(ValueError, match=r"Could not embed 1 of 1 image\(s\): image 0: not an image file"):
        model.embed(str(broken))


def test_existing_vectors_are_refused_kept_or_replaced(pngs, model):
    ids = pngs.values("id")
    old = np.full(model.embedding_dim, 0.5, dtype=np.float32)
    pngs.set_values("emb", {ids[0]: old}, key_field="id")
    with pytest.raises(ValueError, match="1 sample\\(s\\) already have labels in emb"):
        label_samples(pngs, model, "cap", embeddings_field="emb")
    assert "cap" not in pngs.get_field_schema()
    label_samples(pngs.select(ids[1]), model, "cap")  # ids[1] has its caption, and no vector
    summary = label_samples(pngs, model, "cap", skip_existing=True, embeddings_field="emb")
    stored = pngs.values("emb")
    assert np.array_equal(stored[0], old) and pngs.values("cap")[0] is not None  # its vector kept, caption added
    assert all(v is not None for v in stored)
    # ids[1] lacked only its vector: the vision pass alone, and it counts as done.
    assert (summary.targeted, summary.labelled, summary.embedded, summary.skipped) == (5, 5, 4, 0)
    again = label_samples(pngs, model, "cap", skip_existing=True, embeddings_field="emb")
    assert (again.targeted, again.skipped) == (0, 5)
    label_samples(pngs, model, "cap", overwrite=True, embeddings_field="emb")
    assert not np.array_equal(pngs.values("emb")[0], old)


@pytest.mark.parametrize(
    ("stored", "policy", "refused"),
    [
        (np.full(16, 0.25, np.float32), {"skip_existing": True}, True),
        (np.full(16, 0.25, np.float32), {"overwrite": True}, True),
        (np.zeros(0, np.float32), {"skip_existing": True}, True),
        (np.full(33, 0.25, np.float32), {"skip_existing": True}, True),
        (np.full(32, 0.25, np.float32), {"skip_existing": True}, False),
    ],
    ids=["shorter-skip", "shorter-overwrite", "empty", "one-longer", "same-length"],
)
def test_vectors_of_another_length_are_refused_before_any_model_work(pngs, model, stored, policy, refused):
    ids = pngs.values("id")
    pngs.set_values("emb", {ids[0]: stored}, key_field="id")
    images = model.runner.timings.images
    if refused:
        with pytest.raises(ValueError, match=f"holds vectors of length {len(stored)}, but .* length 32"):
            label_samples(pngs, model, "cap", embeddings_field="emb", **policy)
        assert model.runner.timings.images == images and "cap" not in pngs.get_field_schema()
        assert np.array_equal(pngs.values("emb")[0], stored) and pngs.values("emb")[1:] == [None] * 4
    else:
        label_samples(pngs, model, "cap", embeddings_field="emb", **policy)
        assert {len(vector) for vector in pngs.values("emb")} == {32}


@pytest.mark.parametrize(
    ("embeddings_field", "error"),
    [
        ("", "Invalid embeddings field ''"),
        ("a.b", "Invalid embeddings field 'a.b'"),
        ("filepath", "one of FiftyOne's own fields; choose another embeddings field"),
        ("cap", "is a label field of this run"),
        ("ground_truth", "is an input field of this run"),
        ("note", "already holds StringField, but embeddings are vectors"),
    ],
    ids=["empty", "nested", "reserved", "label-field", "input-field", "wrong-type"],
)
def test_an_unusable_embeddings_field_is_refused_before_any_model_work(pngs, tiny_checkpoint, embeddings_field, error):
    pngs.set_values("note", ["x"] * len(pngs))
    model = load_model("region_to_category", model=str(tiny_checkpoint), regions_field="ground_truth")
    images = model.runner.timings.images
    with pytest.raises(ValueError, match=error):
        label_samples(pngs, model, "cap", embeddings_field=embeddings_field)
    assert model.runner.timings.images == images and "cap" not in pngs.get_field_schema()


def test_the_cli_flag_stores_vectors(pngs, tiny_checkpoint, capsys):
    pngs.persistent = True  # the command loads the dataset by name
    code = main(["label", "--dataset", pngs.name, "--task", "caption", "--model", str(tiny_checkpoint), "--num-beams",
                 "1", "--max-new-tokens", "2", "--label-field", "cap", "--embeddings-field", "emb"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Stored 5 embedding(s) in emb." in printed and "fob.compute_similarity(dataset" in printed
    model = load_model("caption", model=str(tiny_checkpoint))
    assert np.allclose(np.stack(pngs.values("emb")), embeddings_of(pngs, model), **TIGHT)
    assert main(["label", "--dataset", pngs.name, "--task", "caption", "--model", str(tiny_checkpoint),
                 "--embeddings-field", "a.b"]) == 2  # fmt: skip
    assert "--embeddings-field must be a field name" in capsys.readouterr().err


def test_the_app_form_offers_the_option_and_the_notification_names_the_index_call(operator, pngs, tiny_checkpoint):
    assert "embeddings_field" in inputs_of(form(operator, pngs, task="caption"))
    params = {"task": "caption", "model": str(tiny_checkpoint), "num_beams": 1, "max_new_tokens": 2,
              "label_field": "app_cap", "embeddings_field": "app_emb"}  # fmt: skip
    messages = run_from_app(pngs, **params)
    assert messages[-1]["body"]["operator_uri"] == "notify"
    text = messages[-1]["body"]["params"]["message"]
    assert "Stored 5 embedding(s) in app_emb" in text
    assert 'fob.compute_similarity(dataset, embeddings="app_emb", brain_key="app_emb_sim")' in text
    assert pngs.count("app_emb") == 5


def test_a_vector_that_is_not_read_back_fails_its_sample(pngs, model, monkeypatch):
    import fiftyone.core.dataset as fod

    ids = pngs.values("id")
    real = fod.Dataset.set_values

    def drop_one_vector(self, field, values, *args, **kwargs):
        if field == "emb":
            values = {k: v for k, v in values.items() if k != ids[1]}
        return real(self, field, values, *args, **kwargs)

    monkeypatch.setattr(fod.Dataset, "set_values", drop_one_vector)
    summary = label_samples(pngs, model, "cap", embeddings_field="emb")
    assert (summary.labelled, summary.embedded) == (4, 4)
    assert summary.failures == {ids[1]: "emb: the embedding was not stored"}
