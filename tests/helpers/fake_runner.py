"""A runner without torch or weights, for the batch and tile logic: features are the items' pixel values."""

from __future__ import annotations

from fiftyone_florence2.core.parsing import Generation

BOX = "<loc_100><loc_200><loc_500><loc_900>"


class FakeRunner:
    """Features are the items' pixel values; an answer names the image it was asked about."""

    def __init__(self, broken_images=(), broken_questions=(), room=10_000):
        self.broken_images = set(broken_images)
        self.broken_questions = set(broken_questions)
        self.room = room
        self.vision_calls: list[list] = []
        self.generate_calls: list[int] = []

    def image_features(self, pixel_values):
        self.vision_calls.append(list(pixel_values))
        if self.broken_images & set(pixel_values):
            raise RuntimeError("a broken image")
        return list(pixel_values)

    def concat_features(self, parts):
        return [f for part in parts for f in part]

    def pool_features(self, features):
        return [f"vector of {f}" for f in features]

    def check_question(self, question):
        if len(question) > self.room:
            raise ValueError("the prompt is too long")

    def generate(self, task, features, questions, image_index, **settings):
        self.generate_calls.append(len(questions))
        if self.broken_questions & set(questions):
            raise RuntimeError("generation broke")
        return [Generation(f"{features[row]}{BOX}") for row in image_index]
