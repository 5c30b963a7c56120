"""The NORA family's model input: one third-person image and the instruction in one chat message.

Shared by NORA / NORA-LONG (`nora.py`) and NORA-1.5 (`nora15.py`), whose published code builds the
same prompt (declare-lab/nora `inference/nora.py`, declare-lab/nora-1.5 `inference/modelling_expert.py`):
a single user message holding the image (`resized_height = resized_width = 224`) followed by the
instruction text, the processor's chat template with the generation prompt,
`qwen_vl_utils.process_vision_info`, and the processor with padding. Batches pad on the left.
"""

from __future__ import annotations

import numpy as np

from nora_bench.types import ActionSpec

# How the model image is made from the env's camera image: policies/images.py (openvla_tf, openvla,
# lanczos, qwen). Which image: the preset's camera, by the env's canonical name (ActionSpec).


class NoraPrompt:
    """Builds the processor inputs for a batch of observations (see the module docstring)."""

    def __init__(self, processor, camera: str, action_spec: ActionSpec, image_size: int = 224,
                 image_resize: str = "openvla"):
        from nora_bench.policies.images import pipeline

        self.pipeline = pipeline(image_resize)
        self.processor, self.camera = processor, action_spec.resolve_camera(camera) or camera
        # The canonical name or an alias of it (an observation written by hand may use either).
        self.names = action_spec.camera_names(self.camera)
        self.image_size, self.image_resize = int(image_size), image_resize
        # Batches are padded on the left so that every row's prompt ends at the same place.
        processor.tokenizer.padding_side = "left"

    def model_image(self, obs) -> np.ndarray:
        name = next((n for n in self.names if n in obs.images), None)
        if name is None:
            # The scheduler renders the cameras the preset lists: a preset without them gives no image.
            raise ValueError(f"observation has no {self.camera!r} image (has {sorted(obs.images)}); "
                             f"list it in the preset: cameras: [{self.camera}]")
        img = np.asarray(obs.images[name], dtype=np.uint8)
        return self.pipeline.run(img, self.image_size)

    def messages(self, obs) -> list[dict]:
        from PIL import Image

        return [{"role": "user", "content": [
            {"type": "image", "image": Image.fromarray(self.model_image(obs)),
             "resized_height": self.image_size, "resized_width": self.image_size},
            {"type": "text", "text": obs.instruction}]}]

    def inputs(self, observations: list, device: str, dtype: str):
        """The processor's batch (input_ids, attention_mask, pixel_values, ...) on `device`, pixels in `dtype`."""
        import torch
        from qwen_vl_utils import process_vision_info

        conversations = [self.messages(o) for o in observations]
        texts = [self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        image_inputs, video_inputs = process_vision_info(conversations)
        inputs = self.processor(text=texts, images=image_inputs, videos=video_inputs, padding=True,
                                return_tensors="pt").to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, dtype))
        return inputs
