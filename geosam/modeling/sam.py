"""The SAM architectures geosam builds: the three official ViT sizes and a tiny one.

The builder mirrors ``segment_anything.build_sam`` (same classes and hyper-parameters, so a
model's ``state_dict`` has exactly the official checkpoints' keys and shapes) with two changes:
the input size is a parameter, and it loads no weights, because ``build_sam`` calls
``torch.load`` without ``weights_only`` (see :mod:`geosam.modeling.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from geosam.utils.errors import GeosamError

# Shared by every SAM size: 16 px patches, 16-channel mask prompts, a two-layer two-way
# transformer with three multimask outputs. The official sizes also share the decoder's width
# (256); the tiny model keeps SAM's decoder classes at a quarter of it (see SAM_SPECS).
PATCH_SIZE = 16
MASK_IN_CHANS = 16
DECODER_DEPTH = 2
NUM_MULTIMASK_OUTPUTS = 3
IOU_HEAD_HIDDEN_DIM = 256


@dataclass(frozen=True)
class SamSpec:
    """What distinguishes one SAM size from another: its image encoder."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    # Blocks with global attention; the others attend within windows of encoder_window_size.
    encoder_global_attn_indexes: tuple[int, ...]
    encoder_window_size: int = 14
    # The prompt embeddings', image embeddings' and decoder transformer's width, and the
    # transformer's MLP width and heads: SAM's decoder for every official size.
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    # The official file name, to tell users which file MODEL.CHECKPOINT wants.
    official_checkpoint: str = ""


SAM_SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11), official_checkpoint="sam_vit_b_01ec64.pth"),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23), official_checkpoint="sam_vit_l_0b3195.pth"),
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31), official_checkpoint="sam_vit_h_4b8939.pth"),
    # Two blocks, windowed then global as each quarter of ViT-B ends; windows of 8 tile the 16x16
    # patch grid of a 256 px input into 4. The decoder is SAM's at width 64: the decoder runs
    # once per prompt over the whole embedding grid, and at width 256 it made a CPU training
    # step several times slower (docs/design-notes.md, "The tiny SAM"), which a model trained
    # from scratch in the demo and the quality benchmark cannot afford. 0.5M parameters in all.
    "tiny": SamSpec(
        64,
        2,
        2,
        (1,),
        encoder_window_size=8,
        prompt_embed_dim=64,
        decoder_mlp_dim=512,
        decoder_num_heads=4,
    ),
}


def get_spec(model_type: str) -> SamSpec:
    """The registry entry for MODEL.TYPE ``model_type``."""
    if model_type not in SAM_SPECS:
        raise GeosamError(f"MODEL.TYPE {model_type!r} is not one of {', '.join(SAM_SPECS)}")
    return SAM_SPECS[model_type]


def build_sam(
    model_type: str,
    image_size: int,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
) -> Sam:
    """A randomly initialised SAM of ``model_type`` for ``image_size`` px square inputs.

    Initialisation draws from torch's global generator: seed it for reproducible weights.
    """
    spec = get_spec(model_type)
    if image_size <= 0 or image_size % PATCH_SIZE:
        raise GeosamError(
            f"INPUT.IMAGE_SIZE must be a positive multiple of {PATCH_SIZE}, got {image_size}"
        )
    grid = image_size // PATCH_SIZE
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=PATCH_SIZE,
            embed_dim=spec.encoder_embed_dim,
            depth=spec.encoder_depth,
            num_heads=spec.encoder_num_heads,
            mlp_ratio=4,
            out_chans=spec.prompt_embed_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=spec.encoder_window_size,
            global_attn_indexes=spec.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=MASK_IN_CHANS,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=spec.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=DECODER_DEPTH,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            num_multimask_outputs=NUM_MULTIMASK_OUTPUTS,
            iou_head_depth=3,
            iou_head_hidden_dim=IOU_HEAD_HIDDEN_DIM,
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    )


def model_type_of(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The SAM_SPECS entry whose encoder width and depth match ``state_dict``; None if none.

    Width comes from the patch embedding, depth from the highest block index, so this works on
    an official checkpoint, a model's ``state_dict()`` and anything with those keys.
    """
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    prefix = "image_encoder.blocks."
    blocks = {key[len(prefix) :].split(".", 1)[0] for key in state_dict if key.startswith(prefix)}
    depth = 1 + max((int(b) for b in blocks if b.isdigit()), default=-1)
    for name, spec in SAM_SPECS.items():
        if (spec.encoder_embed_dim, spec.encoder_depth) == (patch.shape[0], depth):
            return name
    return None
