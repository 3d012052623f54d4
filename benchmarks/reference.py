"""What our pipeline is compared with, written from plain transformers calls.

- :func:`plain_generate`: the model's own ``generate`` on a batch, nothing else.
- :func:`per_sample_approach`: how existing FiftyOne Florence-2 integrations
  run, as described: one image at a time, 3 beams, and a ``sample.save()``
  after each prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image


def sync(device: torch.device) -> None:
    """Waits for queued GPU work, so that wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def plain_generate(runner, images: Sequence[Image.Image], token: str, num_beams: int, new_tokens: int) -> torch.Tensor:
    """``processor(images, text)`` and ``model.generate`` on one batch of decoded images."""
    inputs = runner.processor(images=list(images), text=[token] * len(images), return_tensors="pt")
    inputs = inputs.to(runner.device, runner.dtype)
    sequences = runner.model.generate(
        **inputs,
        num_beams=num_beams,
        do_sample=False,
        min_new_tokens=new_tokens,
        max_new_tokens=new_tokens,
    )
    sync(runner.device)
    return sequences


def answer_to_label(answer, image_wh: tuple[int, int]):
    """A post-processed Florence-2 answer as a FiftyOne label: text, or boxes in pixels."""
    import fiftyone.core.labels as fol

    if isinstance(answer, str):
        return fol.Classification(label=answer)
    width, height = image_wh
    detections = []
    for (x1, y1, x2, y2), label in zip(answer.get("bboxes", []), answer.get("labels", [])):
        box = [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height]
        detections.append(fol.Detection(label=label, bounding_box=box))
    return fol.Detections(detections=detections)


@torch.inference_mode()
def per_sample_approach(samples, runner, token: str, label_field: str, num_beams: int, new_tokens: int) -> int:
    """Labels ``samples`` one at a time and saves each sample after its prediction; returns the count."""
    processor, model = runner.processor, runner.model
    count = 0
    for sample in samples.iter_samples():
        with Image.open(sample.filepath) as file:
            image = file.convert("RGB")
        inputs = processor(text=token, images=image, return_tensors="pt").to(runner.device, runner.dtype)
        ids = model.generate(
            **inputs,
            num_beams=num_beams,
            do_sample=False,
            min_new_tokens=new_tokens,
            max_new_tokens=new_tokens,
        )
        text = processor.batch_decode(ids, skip_special_tokens=False)[0]
        answer = processor.post_process_generation(text, task=token, image_size=image.size)
        sample[label_field] = answer_to_label(answer[token], image.size)
        sample.save()
        count += 1
    return count
